"""The gRPC options of connections between the tiers: what every caller's channel sets (the SDK's, the search
page's and the search service's), the pings of the search service's channel to its encoder replicas, and the
pings every server accepts."""

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

# The search service pings each connection to an encoder replica every 4 s, calls or none, and drops it when
# a ping goes unanswered for 4 s: a replica that stops answering without closing its connections (a frozen
# process, a partition) is then out of the round robin within about 8 s, and the calls it held fail
# UNAVAILABLE and are retried on another replica. Unpinged, every call sent there waited for its whole
# deadline, and searches stalled (a frozen replica of two held every caller for 30 s).
REPLICA_CALLER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 4000),
    ("grpc.keepalive_timeout_ms", 4000),
    ("grpc.http2.ping_timeout_ms", 4000),  # what gRPC 1.85 waits for the ack by (by default a minute)
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# What every server accepts: pings a second apart or more, calls or none (gRPC's default: one per 5 minutes
# without data, past which it ends the connection with GOAWAY "too_many_pings").
PINGS_ACCEPTED: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
]
