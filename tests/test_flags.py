"""Flags with environment twins, without starting a service: which value wins, and how bad ones are said."""

import pytest

from encoder_service.config import parse_args as encoder_flags
from search_service.config import parse_args as search_flags


def test_a_flag_wins_over_its_environment_twin_which_wins_over_the_default(monkeypatch) -> None:
    assert search_flags([]).max_top_k == 1000
    monkeypatch.setenv("SEARCH_MAX_TOP_K", "50")
    assert search_flags([]).max_top_k == 50
    assert search_flags(["--max-top-k", "20"]).max_top_k == 20


def test_the_milvus_settings_take_the_prefix_of_the_service(monkeypatch) -> None:
    # MILVUS_URI is pymilvus's own variable: the settings leave it to pymilvus (the service refuses to start
    # on its default --milvus-uri while it is set: the first version's name of that setting).
    monkeypatch.setenv("MILVUS_URI", "http://elsewhere:19530")
    assert search_flags([]).milvus_uri == "./milvus.db"
    monkeypatch.setenv("SEARCH_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("SEARCH_MILVUS_TOKEN", "root:Milvus")
    monkeypatch.setenv("SEARCH_MILVUS_TIMEOUT_S", "3")
    config = search_flags([])
    assert (config.milvus_uri, config.milvus_token, config.milvus_timeout_s) == (
        "http://milvus:19530",
        "root:Milvus",
        3.0,
    )


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(monkeypatch, capsys) -> None:
    monkeypatch.setenv("ENCODER_MAX_BATCH_SIZE", "many")
    with pytest.raises(SystemExit) as usage:
        encoder_flags([])
    assert usage.value.code == 2
    said = capsys.readouterr().err
    assert "variable ENCODER_MAX_BATCH_SIZE='many' is not a whole number, as --max-batch-size takes" in said
    monkeypatch.setenv("ENCODER_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("ENCODER_DECODE_TIMEOUT_S", "tcp://10.0.0.1:50051")  # as a Kubernetes service link
    with pytest.raises(SystemExit):
        encoder_flags([])
    said = capsys.readouterr().err
    assert "ENCODER_DECODE_TIMEOUT_S='tcp://10.0.0.1:50051' is not a number, as --decode-timeout-s" in said
    assert "invalid literal" not in said and "could not convert" not in said  # Python's words


@pytest.mark.parametrize(
    ("parse", "flags", "message"),
    [
        (search_flags, ["--max-top-k", "0"], "max_top_k must be at least 1, not 0"),
        (search_flags, ["--index-params", "[1, 2]"], "index_params must be a JSON object"),
        (search_flags, ["--log-format", "xml"], "invalid choice: 'xml'"),
        (search_flags, ["--health-interval-s", "0"], "health_interval_s must be a number of seconds above 0"),
        (search_flags, ["--encoder-timeout-s", "nan"], "encoder_timeout_s must be a number of seconds"),
        (search_flags, ["--encoder-timeout-s", "1e10"], "seconds above 0, at most 1e+09, not 10000000000.0"),
        (search_flags, ["--milvus-timeout-s", "-5"], "milvus_timeout_s must be a number of seconds above 0"),
        (search_flags, ["--max-offset", "-1"], "max_offset must be at least 0, not -1"),
        (search_flags, ["--max-top-k", "20000"], "max_top_k + max_offset must be at most 16384"),
        (search_flags, ["--max-message-bytes", "3000000000"], "max_message_bytes must be at most 2147483647"),
        (search_flags, ["--collection", "my-photos"], "collection name 'my-photos' is not one Milvus takes"),
        (search_flags, ["--index-type", "HNSW"], "Milvus Lite takes AUTOINDEX, FLAT, IVF_FLAT"),
        # A port out of range wrapped round to another (--port 70000 served on 4464), a negative grace dropped
        # the calls in flight at SIGTERM, and an image limit over gRPC's 2 GiB let through none it promised.
        (encoder_flags, ["--port", "70000"], "port must be 0 to 65535, not 70000"),
        (encoder_flags, ["--metrics-port", "-7"], "metrics_port must be 0 to 65535, or -1 for none, not -7"),
        (encoder_flags, ["--health-port", "70000"], "health_port must be 0 to 65535, or -1 for none"),
        (encoder_flags, ["--shutdown-grace-s", "-5"], "shutdown_grace_s must be a number of seconds 0"),
        (encoder_flags, ["--max-image-bytes", "3000000000"], "max_image_bytes must be at most 2146435071"),
        (encoder_flags, ["--max-connection-age-s", "-1"], "max_connection_age_s must be a number of seconds"),
        # GetModelInfo failed for ever after (int32 fields); the batcher's thread died on the first wait.
        (encoder_flags, ["--max-queue-size", "3000000000"], "max_queue_size must be at most 2147483647"),
        (encoder_flags, ["--decode-timeout-s", "1e7"], "decode_timeout_s must be at most 86400"),
        (encoder_flags, ["--text-cache-size", "3000000000"], "text_cache_size must be at most 2147483647"),
        (
            encoder_flags,
            ["--max-batch-delay-ms", "10000000000000000"],
            "max_batch_delay_ms must be at most 3600000",
        ),
        (search_flags, ["--max-connection-age-s", "3000000"], "max_connection_age_s must be at most 2147483"),
    ],
)
def test_values_the_service_cannot_run_with_are_refused_at_start(parse, flags, message, capsys) -> None:
    with pytest.raises(SystemExit) as usage:
        parse(flags)
    assert usage.value.code == 2 and message in capsys.readouterr().err


def test_both_services_end_connections_after_an_age_that_zero_turns_off(monkeypatch) -> None:
    assert encoder_flags([]).max_connection_age_s == search_flags([]).max_connection_age_s == 30.0
    monkeypatch.setenv("ENCODER_MAX_CONNECTION_AGE_S", "0")
    monkeypatch.setenv("SEARCH_MAX_CONNECTION_AGE_S", "120")
    assert (encoder_flags([]).max_connection_age_s, search_flags([]).max_connection_age_s) == (0.0, 120.0)


def test_a_milvus_server_takes_index_types_milvus_lite_does_not() -> None:
    assert search_flags(["--milvus-uri", "http://milvus:19530", "--index-type", "HNSW"]).index_type == "HNSW"


def test_settings_that_contradict_each_other_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        encoder_flags(["--max-items-per-request", "600", "--max-queue-size", "512"])
    assert "could never be queued" in capsys.readouterr().err
