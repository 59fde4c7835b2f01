"""The embedded proxy server for ``xray_config`` (design.md section 8), served natively in the
process's gevent hub: shadowsocks (AEAD), trojan, socks, http, with ehco's panel user sync."""
