"""What the License webhook refuses (DESIGN "Licenses from a vendor": what-if). Pure.

Refused, with the reason and the compiler's own message:

* a spec the models cannot read (``InvalidSpec``), a rule that does not compile
  (``RuleCompileError``) or whose worst case costs too much (``RuleTooExpensive``);
* ``notAfter`` before ``notBefore``;
* with trusted signing keys configured, a missing, unknown or wrong signature -- but only when
  the request *introduces* the spec (a create, or an update that changes the spec). A License
  already stored (signed under a key since rotated out, say) can still get a label or be
  deleted: it simply stays ``Valid=False``.

Not refused: a license bound to another cluster (``ClusterMismatch``) -- DESIGN makes it
``Valid=False``; the webhook says so in a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from entitle.api import License
from entitle.domain import reasons
from entitle.domain.licenses import ReadLicense, read_license
from entitle.domain.revisions import spec_hash
from entitle.api.objects import first_error

_SIGNATURE_CODES = frozenset({reasons.SIGNATURE_MISSING, reasons.UNKNOWN_SIGNING_KEY, reasons.SIGNATURE_INVALID})
_ALWAYS_REFUSED = frozenset({"RuleCompileError", "RuleTooExpensive", "InvalidSpec"})


class LicenseRefused(Exception):
    """The License cannot work as written; ``code`` is the DESIGN reason, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Reviewed:
    read: ReadLicense
    warnings: tuple[str, ...] = ()


def review_license(body: dict, old: dict | None, keys: dict | None, cluster_id: str | None) -> Reviewed:
    """Read a License a CREATE/UPDATE would store; raise :class:`LicenseRefused` when it cannot work."""
    try:
        lic = License.model_validate(body)
    except ValidationError as exc:
        raise LicenseRefused("InvalidSpec", first_error(exc)) from None
    spec = lic.spec
    if spec.not_before is not None and spec.not_after is not None and spec.not_after < spec.not_before:
        raise LicenseRefused("InvalidSpec", f"notAfter ({body['spec'].get('notAfter')}) is before "
                                            f"notBefore ({body['spec'].get('notBefore')})")
    read = read_license(lic, keys, cluster_id)
    code = read.invalid_code
    if code in _ALWAYS_REFUSED:
        raise LicenseRefused(code, read.invalid_reason or code)
    introduced = old is None or spec_hash(old.get("spec")) != spec_hash(body.get("spec"))
    if code in _SIGNATURE_CODES and introduced:
        raise LicenseRefused(code, read.invalid_reason or code)
    warnings = []
    if code is not None:
        warnings.append(f"license {lic.metadata.name} will be Valid=False ({code}) and grant nothing: "
                        f"{read.invalid_reason}")
    return Reviewed(read, tuple(warnings))
