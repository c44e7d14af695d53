"""`entitle license keygen | sign | verify` -- offline, files in, text out (DESIGN "Licenses from
a vendor"). Exit codes: 0 done / all valid, 1 some License is not valid, 2 bad input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from entitle.adapters.licensing.keys import KeyFileError, generate, load_private, load_public
from entitle.domain.signatures import SpecNotReadable, sign, verify


class BadInput(ValueError):
    """The files given cannot be used (unreadable YAML, no License, a bad key)."""


def _documents(path: str) -> list[Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadInput(f"{path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _is_license(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "License" and \
        str(doc.get("apiVersion", "")).startswith("entitle.dev/")


def _name_and_spec(doc: dict, path: str) -> tuple[str, dict]:
    meta, spec = doc.get("metadata"), doc.get("spec")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise BadInput(f"{path}: a License without metadata.name")
    if not isinstance(spec, dict):
        raise BadInput(f"{path}: License {meta['name']} has no spec")
    return meta["name"], spec


def cmd_keygen(args: Any) -> int:
    try:
        private, public = generate(Path(args.out), args.key_id)
    except KeyFileError as exc:
        print(f"entitle license keygen: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {private} (private, keep it secret) and {public} (give it to the operator)")
    return 0


def cmd_sign(args: Any) -> int:
    try:
        key = load_private(Path(args.key))
        key_id = args.key_id or Path(args.key).stem
        docs = _documents(args.file)
        if not any(_is_license(d) for d in docs):
            raise BadInput(f"{args.file}: no License in it")
        for doc in docs:
            if _is_license(doc):
                name, spec = _name_and_spec(doc, args.file)
                try:
                    spec["signature"] = sign(name, spec, key, key_id)
                except SpecNotReadable as exc:
                    raise BadInput(f"{args.file}: License {name}: {exc}") from None
    except (KeyFileError, BadInput) as exc:
        print(f"entitle license sign: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def cmd_verify(args: Any) -> int:
    try:
        keys = {}
        for path in args.public_key:
            keys[Path(path).stem] = load_public(Path(path))
        docs = [d for d in _documents(args.file) if _is_license(d)]
        if not docs:
            raise BadInput(f"{args.file}: no License in it")
        verdicts = []
        for doc in docs:
            name, spec = _name_and_spec(doc, args.file)
            try:
                verdicts.append((name, verify(name, spec, keys)))
            except SpecNotReadable as exc:
                raise BadInput(f"{args.file}: License {name}: {exc}") from None
    except (KeyFileError, BadInput) as exc:
        print(f"entitle license verify: {exc}", file=sys.stderr)
        return 2
    for name, reason in verdicts:
        print(f"{name}: {reason or 'valid'}")
    return 0 if all(reason is None for _, reason in verdicts) else 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser("license", help="vendor licenses: keys and signatures (offline); revisions: history, diff, rollback")
    lsub = p.add_subparsers(dest="license_command", required=True)
    kg = lsub.add_parser("keygen", help="a new Ed25519 signing key: DIR/ID.key (0600) and DIR/ID.pub")
    kg.add_argument("--key-id", required=True, help="the key's id (its files' stem, quoted in signatures)")
    kg.add_argument("--out", required=True, help="directory to write the two files into")
    kg.set_defaults(func=cmd_keygen)
    sg = lsub.add_parser("sign", help="print the License(s) in a file with spec.signature set")
    sg.add_argument("--key", required=True, help="the private key file (PKCS#8 PEM)")
    sg.add_argument("--key-id", help="key id to record (default: the key file's stem)")
    sg.add_argument("-f", "--file", required=True, help="License YAML ('-' for stdin)")
    sg.set_defaults(func=cmd_sign)
    vf = lsub.add_parser("verify", help="one line per License: valid, or why not (exit 1 if any is not)")
    vf.add_argument("--public-key", required=True, nargs="+", action="extend",
                    help="trusted public key file(s); each one's key id is its file's stem")
    vf.add_argument("-f", "--file", required=True, help="License YAML ('-' for stdin)")
    vf.set_defaults(func=cmd_verify)
    from entitle.adapters.licensing.history import add_parsers as add_history_parsers

    add_history_parsers(lsub)
