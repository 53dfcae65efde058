"""What every caller's channel to a service sets: the SDK's, the search page's and the search service's."""

CALLER_OPTIONS: list[tuple[str, int]] = [
    # A service that comes back is used again within about a second, not after gRPC's default backoff,
    # which grows to two minutes (the search page took 6-33 s to see a restarted search service).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A `dns:///` target is looked up again whenever a connection ends (a service's max connection age, a
    # replica gone), but by default no sooner than 30 s after the last look-up: replicas added since are
    # then used within a second of the reconnect instead.
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
    # No size limit of the caller's own: each service enforces its limits and says which one was passed.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
