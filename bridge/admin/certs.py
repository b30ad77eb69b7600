"""`dp2bridge cert show`: the listeners' certificate and the CA that mail clients must trust.

Reads only the files named in [tls]; touches no private key and no database.
Certificate parsing is crypto.certs.certificate_info (only crypto/ imports
`cryptography`).
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.admin.context import Context, record, wants_json
from bridge.errors import AdminError


def cmd_show(ctx: Context) -> int:
    from bridge.crypto.certs import certificate_info
    c = ctx.config
    out: dict[str, Any] = {}
    for key, label in (("cert_file", "server"), ("ca_file", "ca")):
        path = c.resolve(getattr(c.tls, key))
        try:
            out[label] = {"file": str(path), **certificate_info(path)}
        except FileNotFoundError:
            if label == "server":
                raise AdminError(f"tls.cert_file {path} does not exist") from None
        except ValueError:
            raise AdminError(f"tls.{key} {path} holds no PEM certificate") from None
    if wants_json(ctx.args):
        record(ctx.args, out)
        return 0
    for i, (label, info) in enumerate(out.items()):
        if i:
            print()
        print(f"{'Server certificate' if label == 'server' else 'CA (import ca_file into mail clients)'}:")
        record(ctx.args, info)
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("cert", help="certificates: show the server certificate and its CA",
                       description="Certificates of the listeners.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", parents=[parents["store"]], help="show the server certificate and CA",
                            description="Show tls.cert_file (names it is valid for, validity, SHA-256 "
                                        "fingerprint) and tls.ca_file, the CA mail clients must trust.")
    show.set_defaults(func=cmd_show)
