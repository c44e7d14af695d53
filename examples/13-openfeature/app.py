"""A tenant's application reading its entitlements through OpenFeature (OFREP provider).

    pip install openfeature-sdk openfeature-provider-ofrep
    ENTITLE_OFREP_URL=http://entitle-webhook.entitle-system.svc:8016 python app.py

In a pod the token is read from a projected ServiceAccount token volume bound to entitle's
audience (the default path below; see README.md): entitle refuses a token meant for the
apiserver, so the app never hands out its cluster credentials. entitle answers for the tenant of
the token's namespace.
"""

import os
from pathlib import Path

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider

TOKEN_FILE = os.environ.get("ENTITLE_TOKEN_FILE", "/var/run/secrets/entitle/token")


def token() -> str:
    # Read on every request: the kubelet rotates the projected token.
    return os.environ.get("ENTITLE_TOKEN") or Path(TOKEN_FILE).read_text().strip()


api.set_provider(OFREPProvider(os.environ["ENTITLE_OFREP_URL"],
                               headers_factory=lambda: {"Authorization": f"Bearer {token()}"}))
flags = api.get_client()

if flags.get_boolean_value("sso", False):
    print("sso: on")
else:
    print("sso: off")
details = flags.get_boolean_details("audit", False)
print(f"audit: {'on' if details.value else 'off'} ({details.variant})")
print(f"instances: {flags.get_integer_value('instances.used', 0)} of {flags.get_integer_value('instances.max', 0)}")
