"""cwtx: distribute Python jobs over a cluster, on Twisted."""

from setuptools import find_packages, setup

setup(
    name="cwtx",
    version="0.1.0",
    description="Distribute Python jobs (closures) over a cluster, on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # twisted.plugins is listed explicitly: it has no __init__.py, on purpose.
    packages=[*find_packages(include=["cwtx", "cwtx.*"]), "twisted.plugins"],
    package_data={
        "twisted": ["plugins/cwtx_plugins.py", "plugins/cwtx_endpoints.py"],
        # The dashboard's script and style (cwtx/master/web.py serves them).
        "cwtx.master": ["dashboard.js", "dashboard.css"],
    },
    # cryptography: every connection is sealed with AES-GCM (cwtx/wire/session.py).
    install_requires=["twisted>=23.10", "cloudpickle>=2.0", "txaio>=23.1", "cryptography>=42"],
    extras_require={
        "test": [
            "pytest>=7", "pytest-timeout>=2.1", "pytest-randomly>=3.15", "pytest-cov>=7",
            "coverage>=7.10", "ruff", "tqdm", "hypothesis", "twisted[tls]", "cryptography",
            # tests/e2e/test_dashboard.py drives Debian's chromium (.ci/run installs it).
            "selenium",
        ],
        # Mutation testing of the pure modules (docs/testing.md).
        "mutation": ["mutmut>=3.3"],
        "tls": ["twisted[tls]"],
        "progress": ["tqdm"],
        # benchmarks/: the peers, and py-spy for benchmarks/profile.py --py-spy.
        "bench": ["dask[distributed]", "py-spy"],
    },
    entry_points={"console_scripts": ["cw = cwtx._cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Distributed Computing",
    ],
)
