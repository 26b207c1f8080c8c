"""Code written for trio-websocket 0.12.2 keeps working where it touches
more than the API's signatures: the logger it configured under 0.12.2's
name (``trio-websocket``), and the ``TypeError`` text for a bad
``use_ssl``.

Logging tests restore both loggers' configuration afterwards (see
``restore_loggers``); records are produced by a real connection pair over
memory streams (INFO: opened and closed; DEBUG: frames).
"""

from __future__ import annotations

import logging
import logging.config
import socket
from collections.abc import Iterator

import pytest
import trio

from trio_websocket import (
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
)
from trio_websocket.testing import open_memory_pair

OLD_NAME = "trio-websocket"
NEW_NAME = "trio_websocket"


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    # (dictConfig disables every logger it does not name: all are restored.)
    every_logger = [
        found
        for found in logging.Logger.manager.loggerDict.values()
        if isinstance(found, logging.Logger)
    ]
    disabled = {found: found.disabled for found in every_logger}
    loggers = [logging.getLogger(name) for name in (OLD_NAME, NEW_NAME, f"{NEW_NAME}.workers")]
    saved = [
        (lg, lg.level, list(lg.handlers), list(lg.filters), lg.propagate, lg.disabled)
        for lg in loggers
    ]
    yield
    for lg, level, handlers, filters, propagate, was_disabled in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.filters[:] = filters
        lg.propagate = propagate
        lg.disabled = was_disabled
    for found, was_disabled in disabled.items():
        found.disabled = was_disabled


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def levels(self) -> set[int]:
        return {record.levelno for record in self.records}


async def one_exchange() -> None:
    """A connection that opens, carries a message each way and closes:
    INFO records for the opening and closing, DEBUG ones for frames when
    DEBUG is on."""
    with trio.fail_after(5):
        async with open_memory_pair() as (client, server):
            await client.send_message("hello")
            await server.send_message(await server.get_message())
            assert await client.get_message() == "hello"


def library_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(NEW_NAME)]


# ----------------------------------------------------------------------
# The logger name


async def test_set_level_on_the_old_name_quiets_the_library(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: everything, unless quieted
    logging.getLogger(OLD_NAME).setLevel(logging.WARNING)
    await one_exchange()
    assert library_records(caplog) == []


async def test_set_level_on_the_old_name_turns_on_info_and_frame_logging() -> None:
    collect = Collect()
    root = logging.getLogger()
    root.addHandler(collect)  # the root keeps its level (WARNING by default)
    try:
        logging.getLogger(OLD_NAME).setLevel(logging.DEBUG)
        await one_exchange()
    finally:
        root.removeHandler(collect)
    texts = [r.getMessage() for r in collect.records if r.name == NEW_NAME]
    assert any(" opened (" in text for text in texts), texts
    assert any("sent TEXT [FIN" in text for text in texts), texts


async def test_caplog_set_level_on_the_old_name(caplog: pytest.LogCaptureFixture) -> None:
    # pytest's own way of configuring a logger (level of the logger and of
    # the capturing handler), as a 0.12.2 user's test suite writes it.
    caplog.set_level(logging.INFO, logger=OLD_NAME)
    await one_exchange()
    info = library_records(caplog)
    assert info and {r.levelno for r in info} == {logging.INFO}
    assert all(r.name == NEW_NAME for r in info)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=OLD_NAME):
        await one_exchange()
    assert library_records(caplog) == []


async def test_a_handler_on_the_old_name_gets_the_records_named_with_the_new_one() -> None:
    collect = Collect()
    old = logging.getLogger(OLD_NAME)
    old.addHandler(collect)
    old.setLevel(logging.INFO)
    await one_exchange()
    assert collect.records and collect.levels() == {logging.INFO}
    # What a formatter's %(name)s shows: the package's name (migrating.rst).
    assert {r.name for r in collect.records} == {NEW_NAME}


async def test_propagate_false_on_the_old_name_keeps_records_from_the_root(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    collect = Collect()
    old = logging.getLogger(OLD_NAME)
    old.addHandler(collect)
    old.propagate = False
    await one_exchange()
    assert collect.records
    assert library_records(caplog) == []


async def test_filters_on_the_old_name_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    old = logging.getLogger(OLD_NAME)

    def no_opened(record: logging.LogRecord) -> bool:
        return " opened (" not in record.getMessage()

    old.addFilter(no_opened)
    await one_exchange()
    texts = [r.getMessage() for r in library_records(caplog)]
    assert texts and not any(" opened (" in text for text in texts), texts


async def test_a_level_on_the_new_name_wins_over_the_old_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger(OLD_NAME).setLevel(logging.WARNING)
    logging.getLogger(NEW_NAME).setLevel(logging.INFO)
    await one_exchange()
    assert {r.levelno for r in library_records(caplog)} == {logging.INFO}

    caplog.clear()
    logging.getLogger(OLD_NAME).setLevel(logging.DEBUG)
    logging.getLogger(NEW_NAME).setLevel(logging.WARNING)
    await one_exchange()
    assert library_records(caplog) == []


def test_the_new_names_children_follow_the_old_name() -> None:
    logging.getLogger(OLD_NAME).setLevel(logging.ERROR)
    workers = logging.getLogger(f"{NEW_NAME}.workers")
    assert not workers.isEnabledFor(logging.WARNING)
    assert workers.isEnabledFor(logging.ERROR)


async def test_dict_config_of_the_new_name(caplog: pytest.LogCaptureFixture) -> None:
    # A logging configuration names the logger it configures; the new name
    # is the one to give (naming only the old one leaves ours to
    # disable_existing_loggers, see migrating.rst).
    collect = Collect()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": True,
            "handlers": {"collect": {"()": lambda: collect}},
            "loggers": {NEW_NAME: {"level": "INFO", "handlers": ["collect"]}},
        }
    )
    assert logging.getLogger(OLD_NAME).disabled  # not named, so disabled...
    await one_exchange()
    assert collect.records and collect.levels() == {logging.INFO}  # ...without effect on ours


# ----------------------------------------------------------------------
# use_ssl


USE_SSL_MESSAGE = "`use_ssl` argument must be bool or ssl.SSLContext"


def closed_port() -> int:
    """A port nobody listens on: a call that tried to connect would fail
    with a HandshakeError or OSError, not the TypeError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("use_ssl", ["yes", 1, None, object()])
async def test_open_websocket_with_a_bad_use_ssl_raises_type_error(use_ssl: object) -> None:
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        async with open_websocket(
            "127.0.0.1",
            closed_port(),
            "/",
            use_ssl=use_ssl,  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover
    assert str(caught.value) == USE_SSL_MESSAGE


async def test_connect_websocket_with_a_bad_use_ssl_raises_type_error(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        await connect_websocket(nursery, "127.0.0.1", closed_port(), "/", use_ssl="yes")  # type: ignore[arg-type]
    assert str(caught.value) == USE_SSL_MESSAGE


async def test_url_functions_with_a_bad_ssl_context_raise_the_same_type_error(
    nursery: trio.Nursery,
) -> None:
    # 0.12.2 passed a wss:// URL's ssl_context on as use_ssl, unchecked.
    url = f"wss://127.0.0.1:{closed_port()}/"
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        async with open_websocket_url(url, "context"):  # type: ignore[arg-type]
            pass  # pragma: no cover
    assert str(caught.value) == USE_SSL_MESSAGE
    with trio.fail_after(5), pytest.raises(TypeError) as caught:
        await connect_websocket_url(nursery, url, "context")  # type: ignore[arg-type]
    assert str(caught.value) == USE_SSL_MESSAGE
