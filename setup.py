"""Package metadata for trio_websocket (runtime dependencies: trio, wsproto)."""

import os
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent
version: dict[str, str] = {}
exec((HERE / "trio_websocket" / "_version.py").read_text(), version)

# The compiled speedup is optional: without a C compiler (or with
# TRIO_WEBSOCKET_NO_EXTENSIONS=1) the package installs and runs in pure Python.
ext_modules = []
if not os.environ.get("TRIO_WEBSOCKET_NO_EXTENSIONS"):
    ext_modules.append(
        Extension(
            "trio_websocket._wire._speedups",
            ["trio_websocket/_wire/_speedups.c"],
            optional=True,
        )
    )

setup(
    name="trio_websocket",
    version=version["__version__"],
    description="WebSocket client and server for Trio, built on wsproto",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # The package and any subpackages it grows; tests, docs and examples go
    # in the sdist only (MANIFEST.in; .ci/package_check.py checks both).
    packages=find_packages(include=["trio_websocket", "trio_websocket.*"]),
    # The typing marker and stubs ship in the wheel, wherever in the package
    # they sit; the C source is for building and stays in the sdist.
    package_data={"": ["py.typed", "*.pyi"]},
    exclude_package_data={"": ["*.c"]},
    ext_modules=ext_modules,
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=["trio>=0.25", "wsproto>=1.2"],
    # The Redis-backed hub (trio_websocket.redis_hub; coredis runs on Trio
    # through anyio), and WebSockets over HTTP/2 (RFC 8441; trio_websocket/_h2).
    extras_require={"redis": ["coredis>=6.0"], "http2": ["h2>=4.1"]},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Trio",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP",
        "Typing :: Typed",
    ],
)
