"""What bounds a peer's use of the node: the limits and deadlines (config keys and their
defaults), fairness budgets that make every read loop yield to the hub, and accept loops that
survive running out of file descriptors."""
