"""permessage-deflate negotiation (RFC 7692 section 7), pure: offers,
responses, fallbacks, refusals, and the settings object."""

from __future__ import annotations

import pytest

from trio_websocket import DeflateConfig, DeflateParameters
from trio_websocket._core.compression import (
    client_accept,
    client_offer,
    compression_config,
    parse_element,
    server_accept,
)


def params(element: str) -> dict[str, str | None]:
    return parse_element(element)[1]


def accept(offer: str, config: DeflateConfig | None = None) -> tuple[DeflateParameters, str] | None:
    return server_accept(params(offer), config or DeflateConfig())


# -- the client's offer ----------------------------------------------------


def test_default_offer_says_the_client_takes_a_window_limit() -> None:
    assert client_offer(DeflateConfig()) == "client_max_window_bits"


def test_offer_carries_every_configured_parameter() -> None:
    config = DeflateConfig(
        client_max_window_bits=10,
        server_max_window_bits=11,
        client_no_context_takeover=True,
        server_no_context_takeover=True,
    )
    offered = params("permessage-deflate; " + client_offer(config))
    assert offered == {
        "server_no_context_takeover": None,
        "client_no_context_takeover": None,
        "server_max_window_bits": "11",
        "client_max_window_bits": "10",
    }


# -- the server's answer ---------------------------------------------------


def test_server_limits_both_windows_to_12_bits_by_default() -> None:
    answer = accept("permessage-deflate; client_max_window_bits")
    assert answer is not None
    agreed, response = answer
    assert agreed == DeflateParameters(server_max_window_bits=12, client_max_window_bits=12)
    assert response == "server_max_window_bits=12; client_max_window_bits=12"


def test_server_accepts_a_bare_offer() -> None:
    answer = accept("permessage-deflate")
    assert answer is not None
    assert answer[0].client_max_window_bits == 15
    assert "client_max_window_bits" not in answer[1]


@pytest.mark.parametrize("bits", [8, 9, 10, 15])
def test_server_honours_the_clients_server_window_limit(bits: int) -> None:
    answer = accept(f"permessage-deflate; server_max_window_bits={bits}")
    assert answer is not None
    agreed, response = answer
    assert agreed.server_max_window_bits == min(bits, 12)
    if bits < 15:
        assert f"server_max_window_bits={min(bits, 12)}" in response


def test_quoted_values_are_accepted() -> None:
    answer = accept('permessage-deflate; server_max_window_bits="10"')
    assert answer is not None and answer[0].server_max_window_bits == 10


def test_server_agrees_to_no_context_takeover_and_says_so() -> None:
    answer = accept("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    assert answer is not None
    agreed, response = answer
    assert agreed.server_no_context_takeover and agreed.client_no_context_takeover
    assert "server_no_context_takeover" in response.split("; ")
    assert "client_no_context_takeover" in response.split("; ")


def test_server_may_require_client_no_context_takeover() -> None:
    answer = accept("permessage-deflate", DeflateConfig(client_no_context_takeover=True))
    assert answer is not None
    assert answer[0].client_no_context_takeover
    assert "client_no_context_takeover" in answer[1]


def test_server_limits_the_client_window_only_when_offered() -> None:
    config = DeflateConfig(client_max_window_bits=10)
    answer = accept("permessage-deflate; client_max_window_bits", config)
    assert answer is not None
    assert answer[0].client_max_window_bits == 10
    assert "client_max_window_bits=10" in answer[1]
    # A client that cannot take the limit: its offer is declined.
    assert accept("permessage-deflate", config) is None


def test_client_window_promise_is_kept_in_the_agreement() -> None:
    answer = accept("permessage-deflate; client_max_window_bits=11")
    assert answer is not None
    assert answer[0].client_max_window_bits == 11
    answer = accept(
        "permessage-deflate; client_max_window_bits=11", DeflateConfig(client_max_window_bits=9)
    )
    assert answer is not None and answer[0].client_max_window_bits == 9


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; =10",
        "permessage-deflate; server_max_window_bits=1 0",
    ],
)
def test_server_declines_bad_offers(offer: str) -> None:
    try:
        parsed = params(offer)
    except ValueError:
        return  # refused while parsing: declined just the same
    assert server_accept(parsed, DeflateConfig()) is None


# -- the client's check of the response ------------------------------------


def test_client_takes_a_plain_response() -> None:
    agreed = client_accept(params("permessage-deflate"), DeflateConfig())
    assert agreed == DeflateParameters()


def test_client_takes_the_servers_limits() -> None:
    agreed = client_accept(
        params(
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9;"
            " server_no_context_takeover; client_no_context_takeover"
        ),
        DeflateConfig(),
    )
    assert agreed == DeflateParameters(
        server_max_window_bits=10,
        client_max_window_bits=9,
        server_no_context_takeover=True,
        client_no_context_takeover=True,
    )


@pytest.mark.parametrize(
    ("response", "config"),
    [
        ("permessage-deflate; foo", DeflateConfig()),
        ("permessage-deflate; client_max_window_bits", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=16", DeflateConfig()),
        ("permessage-deflate; server_no_context_takeover=x", DeflateConfig()),
        ("permessage-deflate", DeflateConfig(server_no_context_takeover=True)),
        ("permessage-deflate", DeflateConfig(server_max_window_bits=10)),
        ("permessage-deflate; server_max_window_bits=11", DeflateConfig(server_max_window_bits=10)),
    ],
)
def test_client_refuses_a_bad_or_non_compliant_response(
    response: str, config: DeflateConfig
) -> None:
    with pytest.raises(ValueError):
        client_accept(params(response), config)


def test_duplicate_parameter_in_a_response_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_element("permessage-deflate; client_max_window_bits=9; client_max_window_bits=9")


# -- the settings ------------------------------------------------------------


def test_compression_argument_forms() -> None:
    assert compression_config(None) is None
    assert compression_config("deflate") == DeflateConfig()
    config = DeflateConfig(threshold=0)
    assert compression_config(config) is config
    with pytest.raises(ValueError):
        compression_config("gzip")
    with pytest.raises(TypeError):
        compression_config(True)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("client_max_window_bits", 8, ValueError),
        ("server_max_window_bits", 16, ValueError),
        ("server_max_window_bits", "12", TypeError),
        ("client_no_context_takeover", 1, TypeError),
        ("memory_level", 0, ValueError),
        ("memory_level", 10, ValueError),
        ("compression_level", -2, ValueError),
        ("threshold", -1, ValueError),
        ("threshold", 1.5, TypeError),
    ],
)
def test_bad_settings_fail_early(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        DeflateConfig(**{field: value})  # type: ignore[arg-type]


def test_settings_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        DeflateConfig(12)  # type: ignore[misc]
    config = DeflateConfig()
    with pytest.raises(AttributeError):
        config.threshold = 5  # type: ignore[misc]
