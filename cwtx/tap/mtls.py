"""
``mtls:`` — a TLS server endpoint that requires client certificates.

Twisted's ``ssl:`` server string has no option to verify clients, so cwtx
adds one (registered as an endpoint plugin in twisted/plugins)::

    mtls:5494:privateKey=server.pem[:certKey=cert.pem]:caCertsDir=DIR[:interface=IP]

Clients and workers then connect with Twisted's own ``tls:`` client string,
adding ``certificate=`` and ``privateKey=``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from twisted.python.filepath import FilePath
from zope.interface import implementer


def _load_cas(directory: str) -> list[Any]:
    from twisted.internet import ssl

    cas = []
    for child in sorted(FilePath(directory).children()):
        if child.isfile() and child.basename().endswith(".pem"):
            cas.append(ssl.Certificate.loadPEM(child.getContent()).original)
    if not cas:
        raise ValueError(f"mtls: no .pem certificates in caCertsDir={directory}")
    return cas


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MutualTLSServerParser:
    prefix = "mtls"

    def parseStreamServer(
        self,
        reactor: Any,
        port: str,
        privateKey: str = "server.pem",
        certKey: str | None = None,
        caCertsDir: str | None = None,
        interface: str = "",
        backlog: str = "50",
    ) -> SSL4ServerEndpoint:
        from twisted.internet import ssl

        if caCertsDir is None:
            raise ValueError(
                "mtls: needs caCertsDir= (the CAs whose client certificates to accept)"
            )
        certificate = ssl.PrivateCertificate.loadPEM(
            FilePath(certKey or privateKey).getContent() + b"\n" + FilePath(privateKey).getContent()
        )
        options = ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            verify=True,
            caCerts=_load_cas(caCertsDir),
            requireCertificate=True,
        )
        return SSL4ServerEndpoint(reactor, int(port), options, int(backlog), interface)


parser = MutualTLSServerParser()
