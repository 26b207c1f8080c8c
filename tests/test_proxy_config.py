"""Choosing a proxy: the :class:`Proxy` value and its URL rules, the
``proxy`` argument, and the environment variables read for ``proxy=True``
(``no_proxy`` matching included). No I/O: the environment is a dict.
"""

from __future__ import annotations

import copy
import pickle
import ssl

import pytest

from trio_websocket import (
    HandshakeError,
    Proxy,
    ProxyAuthenticationError,
    ProxyError,
    ProxyRejected,
)
from trio_websocket._client.proxy_config import bypasses_proxy, choose_proxy, proxy_from_environment

# ---------------------------------------------------------------------------
# Proxy URLs


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "address"),
    [
        ("http://proxy.example", "http", "proxy.example", 80, "proxy.example:80"),
        ("https://proxy.example", "https", "proxy.example", 443, "proxy.example:443"),
        ("socks5://proxy.example", "socks5", "proxy.example", 1080, "proxy.example:1080"),
        ("socks5h://10.0.0.1:9050", "socks5h", "10.0.0.1", 9050, "10.0.0.1:9050"),
        ("HTTP://Proxy.Example:3128/", "http", "proxy.example", 3128, "proxy.example:3128"),
        ("http://[::1]:8080", "http", "::1", 8080, "[::1]:8080"),
        ("  socks5://[fe80::1]  ", "socks5", "fe80::1", 1080, "[fe80::1]:1080"),
    ],
)
def test_proxy_url_parts(url: str, scheme: str, host: str, port: int, address: str) -> None:
    proxy = Proxy(url)
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, host, port)
    assert proxy.address == address
    assert proxy.url == f"{scheme}://{address}"
    assert proxy.username is None and proxy.password is None


def test_socks5_resolves_locally_and_socks5h_remotely() -> None:
    assert not Proxy("socks5://p").remote_dns
    assert Proxy("socks5h://p").remote_dns
    assert Proxy("http://p").remote_dns
    assert Proxy("socks5://p").is_socks and not Proxy("https://p").is_socks


def test_credentials_are_percent_decoded() -> None:
    proxy = Proxy("http://us%20er:p%40ss%3Aword@proxy.example:3128")
    assert proxy.username == "us er"
    assert proxy.password == "p@ss:word"
    # A user without a password has an empty one.
    assert Proxy("socks5://user@p").password == ""


def test_repr_and_errors_never_show_the_password() -> None:
    proxy = Proxy("socks5h://user:hunter2@proxy.example:1080")
    assert repr(proxy) == "Proxy('socks5h://user:***@proxy.example:1080')"
    assert "hunter2" not in proxy.url
    with pytest.raises(ValueError) as caught:
        Proxy("socks4://user:hunter2@proxy.example")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("socks4://proxy.example", "scheme must be http, https, socks5 or socks5h"),
        ("ws://proxy.example", "scheme must be"),
        ("proxy.example:3128", "scheme must be"),
        ("http://", "has no host"),
        ("http://:8080", "has no host"),
        ("http://proxy.example:99999", "invalid port"),
        ("http://proxy.example:http", "invalid port"),
        ("http://proxy.example:0", "port 0"),
        ("http://proxy.example/path", "must not have a path"),
        ("http://proxy.example/?q=1", "must not have a path"),
        ("http://proxy.example#frag", "must not have a path"),
        ("http://a%3Ab:pw@proxy.example", "cannot contain ':'"),
        (f"socks5://{'u' * 256}:pw@proxy.example", "1 to 255 bytes"),
        ("socks5://:pw@proxy.example", "1 to 255 bytes"),
        (f"socks5://user:{'p' * 256}@proxy.example", "at most 255 bytes"),
    ],
)
def test_unusable_proxy_url_raises_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Proxy(url)


def test_proxy_url_must_be_a_str() -> None:
    with pytest.raises(TypeError):
        Proxy(b"http://proxy.example")  # type: ignore[arg-type]


def test_ssl_context_is_for_https_proxies_only() -> None:
    context = ssl.create_default_context()
    assert Proxy("https://p", ssl_context=context).ssl_context is context
    with pytest.raises(ValueError, match="for https://"):
        Proxy("http://p", ssl_context=context)
    with pytest.raises(TypeError):
        Proxy("https://p", ssl_context=True)  # type: ignore[arg-type]


def test_headers_are_checked_and_for_http_proxies_only() -> None:
    proxy = Proxy("http://p", headers=[(b"X-Team", b"blue")])
    assert proxy.headers == [(b"X-Team", b"blue")]
    with pytest.raises(ValueError, match="HTTP proxies only"):
        Proxy("socks5://p", headers=[(b"X-Team", b"blue")])
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Proxy("http://p", headers=[(b"X-Team", b"blue\r\nEvil: 1")])
    with pytest.raises(ValueError, match="invalid proxy header name"):
        Proxy("http://p", headers=[(b"Bad Name", b"x")])
    with pytest.raises(TypeError):
        Proxy("http://p", headers=[("X-Team", "blue")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Proxy("http://p", headers=b"X-Team: blue")  # type: ignore[arg-type]


def test_a_proxy_cannot_be_changed() -> None:
    proxy = Proxy("http://p")
    with pytest.raises(AttributeError, match="cannot be changed"):
        proxy.port = 3128
    with pytest.raises(AttributeError, match="cannot be changed"):
        del proxy.host
    assert proxy.port == 80
    assert copy.copy(proxy) is proxy
    assert copy.deepcopy({"proxy": proxy})["proxy"] is proxy


def test_proxies_compare_by_value() -> None:
    assert Proxy("http://p:80") == Proxy("HTTP://p")
    assert hash(Proxy("http://p:80")) == hash(Proxy("http://p"))
    assert Proxy("http://u:a@p") != Proxy("http://u:b@p")
    assert Proxy("socks5://p") != Proxy("socks5h://p")


# ---------------------------------------------------------------------------
# The errors


def test_proxy_errors_are_handshake_errors_and_survive_copy_and_pickle() -> None:
    assert issubclass(ProxyError, HandshakeError)
    assert issubclass(ProxyAuthenticationError, ProxyRejected)
    errors: list[ProxyError] = [
        ProxyError("the HTTP proxy p:80 closed the connection"),
        ProxyRejected("refused", 403, None, [(b"Server", b"x")]),
        ProxyRejected("refused", None, 5),
        ProxyAuthenticationError("who are you", 407, None, [(b"Proxy-Authenticate", b"Basic")]),
    ]
    for error in errors:
        for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
            assert type(clone) is type(error)
            assert str(clone) == str(error)
            assert clone.args == error.args
            if isinstance(error, ProxyRejected):
                assert isinstance(clone, ProxyRejected)
                assert (clone.status_code, clone.reply_code, clone.headers) == (
                    error.status_code,
                    error.reply_code,
                    error.headers,
                )


# ---------------------------------------------------------------------------
# The proxy argument


def test_none_and_false_mean_direct_even_with_an_environment() -> None:
    environ = {"http_proxy": "http://p:3128", "all_proxy": "socks5://p"}
    assert choose_proxy(None, "h", 80, False, environ) is None
    assert choose_proxy(False, "h", 80, False, environ) is None


def test_a_proxy_or_url_is_used_whatever_the_environment_says() -> None:
    proxy = Proxy("socks5://p")
    environ = {"no_proxy": "*"}
    assert choose_proxy(proxy, "h", 80, False, environ) is proxy
    assert choose_proxy("http://p:3128", "h", 443, True, environ) == Proxy("http://p:3128")


def test_bad_url_argument_raises_proxy_error_chaining_the_value_error() -> None:
    with pytest.raises(ProxyError, match="invalid proxy URL") as caught:
        choose_proxy("socks4://p", "h", 80, False, {})
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("setting", [1, 1.5, b"http://p", ["http://p"]])
def test_other_kinds_raise_type_error(setting: object) -> None:
    with pytest.raises(TypeError, match="proxy must be None, True"):
        choose_proxy(setting, "h", 80, False, {})


# ---------------------------------------------------------------------------
# The environment


@pytest.mark.parametrize(
    ("environ", "secure", "expected"),
    [
        ({}, False, None),
        ({}, True, None),
        ({"http_proxy": "http://h:1"}, False, ("http_proxy", "http://h:1")),
        ({"http_proxy": "http://h:1"}, True, None),
        ({"https_proxy": "http://s:1"}, True, ("https_proxy", "http://s:1")),
        ({"https_proxy": "http://s:1"}, False, None),
        ({"HTTPS_PROXY": "http://S:1"}, True, ("HTTPS_PROXY", "http://S:1")),
        (
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"},
            True,
            ("https_proxy", "http://low:1"),
        ),
        ({"https_proxy": "", "HTTPS_PROXY": "http://up:1"}, True, ("HTTPS_PROXY", "http://up:1")),
        ({"https_proxy": "  "}, True, None),
        (
            {"wss_proxy": "socks5://w:1", "https_proxy": "http://s:1"},
            True,
            ("wss_proxy", "socks5://w:1"),
        ),
        ({"ws_proxy": "http://w:1", "http_proxy": "http://h:1"}, False, ("ws_proxy", "http://w:1")),
        ({"all_proxy": "socks5h://a:1"}, True, ("all_proxy", "socks5h://a:1")),
        ({"ALL_PROXY": "socks5h://a:1"}, False, ("ALL_PROXY", "socks5h://a:1")),
        (
            {"all_proxy": "socks5h://a:1", "http_proxy": "http://h:1"},
            False,
            ("http_proxy", "http://h:1"),
        ),
        # In a CGI script, HTTP_PROXY may come from a request's Proxy header.
        ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, False, None),
        ({"HTTP_PROXY": "http://ok:1"}, False, ("HTTP_PROXY", "http://ok:1")),
        (
            {"http_proxy": "http://ok:1", "REQUEST_METHOD": "GET"},
            False,
            ("http_proxy", "http://ok:1"),
        ),
    ],
)
def test_which_variable_is_read(
    environ: dict[str, str], secure: bool, expected: tuple[str, str] | None
) -> None:
    assert proxy_from_environment("server.example", 443, secure, environ) == expected


def test_environment_value_without_scheme_is_an_http_proxy() -> None:
    chosen = choose_proxy(True, "h", 443, True, {"https_proxy": "proxy.corp:3128"})
    assert chosen == Proxy("http://proxy.corp:3128")


def test_environment_with_credentials_and_https_proxy() -> None:
    chosen = choose_proxy(True, "h", 443, True, {"HTTPS_PROXY": "https://u:p%21@proxy.corp"})
    assert chosen is not None
    assert (chosen.scheme, chosen.port, chosen.username, chosen.password) == (
        "https",
        443,
        "u",
        "p!",
    )


def test_unusable_environment_value_names_the_variable() -> None:
    with pytest.raises(ProxyError, match="the ALL_PROXY environment variable") as caught:
        choose_proxy(True, "h", 80, False, {"ALL_PROXY": "socks4://p:1080"})
    assert isinstance(caught.value.__cause__, ValueError)


def test_no_proxy_in_the_environment_means_direct() -> None:
    environ = {"https_proxy": "http://p:1", "NO_PROXY": "internal.example"}
    assert choose_proxy(True, "api.internal.example", 443, True, environ) is None
    assert choose_proxy(True, "public.example", 443, True, environ) == Proxy("http://p:1")
    # The lower-case spelling wins, as for the other variables.
    environ["no_proxy"] = "other.example"
    assert choose_proxy(True, "api.internal.example", 443, True, environ) is not None


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypass"),
    [
        (None, "example.com", 80, False),
        ("", "example.com", 80, False),
        ("*", "anything.example", 443, True),
        ("example.com", "example.com", 80, True),
        ("example.com", "www.example.com", 80, True),
        ("example.com", "a.b.example.com", 80, True),
        ("example.com", "notexample.com", 80, False),
        ("example.com", "example.com.evil", 80, False),
        (".example.com", "example.com", 80, True),
        (".example.com", "www.example.com", 80, True),
        ("*.example.com", "www.example.com", 80, True),
        ("Example.COM.", "www.example.com", 80, True),
        ("example.com", "WWW.Example.Com.", 80, True),
        ("example.com:8080", "example.com", 8080, True),
        ("example.com:8080", "example.com", 80, False),
        ("a.test, b.test ,c.test", "b.test", 80, True),
        ("a.test b.test", "b.test", 80, True),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1", "127.0.0.2", 80, False),
        ("127.0.0.1:9000", "127.0.0.1", 80, False),
        ("10.0.0.0/8", "10.20.30.40", 80, True),
        ("10.0.0.0/8", "11.0.0.1", 80, False),
        ("10.0.0.0/8", "ten.example", 80, False),
        ("::1", "::1", 80, True),
        ("::1", "[::1]", 80, True),
        ("0:0:0:0:0:0:0:1", "::1", 80, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 80, False),
        ("[::1]", "::1", 80, True),
        ("fd00::/8", "fd12::5", 80, True),
        ("fd00::/8", "10.0.0.1", 80, False),
        ("localhost", "localhost", 80, True),
        # Entries that cannot be read are skipped, not fatal.
        ("example.com:http, [::1, ok.test", "ok.test", 80, True),
        ("example.com:http", "example.com", 80, False),
        ("10.0.0.0/99", "10.0.0.1", 80, False),
        (".", "example.com", 80, False),
    ],
)
def test_no_proxy_matching(no_proxy: str | None, host: str, port: int, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass
