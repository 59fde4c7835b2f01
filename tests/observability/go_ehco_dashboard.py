"""Test data: the PromQL of Go ehco's own Grafana dashboard, 1.1.4-dev.

Taken from Ehco1996/ehco at commit 39d8540 (March 2024), file ``monitor/dashboard.json``: the
``expr`` of its 25 panel targets, in panel order, and the queries of its three template
variables. Only the expressions are kept (no panel layout, titles or other text), so the tests
can check that an ehco-gevent fleet serves everything that dashboard asks for."""

#: template variables: name -> Grafana ``label_values(...)`` query
VARIABLES = {
    'job': 'label_values(go_goroutines, job)',
    'instance': 'label_values(node_uname_info{job="$job"}, instance)',
    'remote': 'label_values(ehco_traffic_network_transmit_bytes{job="$job",instance=~"$instance"},remote)',
}

#: the 25 panel queries
QUERIES = [
    'irate(node_network_receive_bytes_total{job="$job",instance=~"$instance"}[$__rate_interval])*8',
    'irate(node_network_transmit_bytes_total{job="$job",instance=~"$instance"}[$__rate_interval])*8',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode="system"}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode="user"}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode="iowait"}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode=~".*irq"}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode!=\'idle\',mode!=\'user\',mode!=\'system\',mode!=\'iowait\',mode!=\'irq\',mode!=\'softirq\'}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'sum by(instance) (irate(node_cpu_seconds_total{job="$job",instance=~"$instance", mode="idle"}[$__rate_interval])) / on(instance) group_left sum by (instance)((irate(node_cpu_seconds_total{job="$job",instance=~"$instance"}[$__rate_interval])))',
    'node_memory_MemTotal_bytes{job="$job",instance=~"$instance"}',
    'node_memory_MemTotal_bytes{job="$job",instance=~"$instance"} - node_memory_MemFree_bytes{job="$job",instance=~"$instance"} - (node_memory_Cached_bytes{job="$job",instance=~"$instance"} + node_memory_Buffers_bytes{job="$job",instance=~"$instance"} + node_memory_SReclaimable_bytes{job="$job",instance=~"$instance"})',
    'node_memory_Cached_bytes{job="$job",instance=~"$instance"} + node_memory_Buffers_bytes{job="$job",instance=~"$instance"} + node_memory_SReclaimable_bytes{job="$job",instance=~"$instance"}',
    'node_memory_MemFree_bytes{job="$job",instance=~"$instance"}',
    '(node_memory_SwapTotal_bytes{job="$job",instance=~"$instance"} - node_memory_SwapFree_bytes{job="$job",instance=~"$instance"})',
    '100 - ((node_filesystem_avail_bytes{job="$job",instance=~"$instance",device!~\'rootfs\'} * 100) / node_filesystem_size_bytes{job="$job",instance=~"$instance",device!~\'rootfs\'})',
    'count(ehco_alive_state)',
    'sum (go_memstats_sys_bytes{instance=~"$instance"}) by(instance)',
    'sum(go_goroutines{instance=~"$instance"}) by (instance)',
    'histogram_quantile(0.90, sum(rate(ehco_traffic_handshake_duration_bucket{job="$job",instance=~"$instance"}[$__rate_interval])) by (le,instance,remote))',
    'sum(ehco_traffic_network_transmit_bytes{job="$job",instance=~"$instance",remote=~"$remote"}) by (instance,job,remote)',
    'irate(ehco_traffic_network_transmit_bytes{job="$job",instance=~"$instance",flow="read"}[$__rate_interval]) * 8',
    '-irate(ehco_traffic_network_transmit_bytes{job="$job",instance=~"$instance",flow="write"}[$__rate_interval]) * 8',
    'sum(ehco_traffic_current_connection_count{job="$job",type="tcp",instance=~"$instance"}) by (instance,remote)',
    'sum(ehco_traffic_current_connection_count{job="$job",type="udp",instance=~"$instance"}) by (instance,remote)',
    'sum(ehco_ping_requests_total{}) by (instance)',
    'histogram_quantile(0.9,sum(rate(ehco_ping_response_duration_seconds_bucket{instance=~"$instance"}[1m])) by (label,host,le))',
]
