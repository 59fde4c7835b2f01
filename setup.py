from setuptools import find_packages, setup

from ehco_gevent.version import VERSION

setup(
    name="ehco-gevent",
    version=VERSION,
    description="A gevent drop-in replacement for the ehco network relay (1.1.4-dev)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ehco_gevent", "ehco_gevent.*"]),
    include_package_data=True,
    package_data={"ehco_gevent": ["static/*", "templates/*", "web/static/*", "web/templates/*"]},
    install_requires=[
        "gevent>=24.2,<27",
        "gevent-websocket>=0.10.1,<0.11",
        "flask>=3.0,<4",
        "prometheus-client>=0.20,<1",
        "requests>=2.31,<3",
        "pyyaml>=6.0,<7",
        "click>=8.1,<9",
        "cryptography>=42,<49",
        "psutil>=5.9,<8",
        "websockets>=13,<17",  # only its C apply_mask, for frames mode
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2,<3",
            "hypothesis>=6.100,<7",
            "playwright>=1.40,<2",
            # coverage-guided fuzzing of the parsers (tests/fuzz); binary wheels for Linux x86_64
            "atheris>=2.3,<4; platform_system == 'Linux' and platform_machine == 'x86_64'",
        ],
    },
    entry_points={"console_scripts": ["ehco=ehco_gevent.cli:main"]},
)
