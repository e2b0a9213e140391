"""Verifies a Covenant evidence pack from docs/evidence.md alone.

An independent check of `covenant audit verify-export`: written from the
documents (docs/evidence.md, docs/formats.md), with SHA-256, HMAC-SHA256,
Ed25519 (the `cryptography` package) and RFC 9162, reusing only this folder's
covenant_verify.py (itself written from the documents). Usage:

    python verify_pack.py DIR

Prints `OK <entries> <tree size>` and exits 0, or prints the failure and
exits 1.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

import covenant_verify as cv

ACTION_TYPE = "application/vnd.covenant.action.v1+json"
SIGNAL_TYPE = "application/vnd.covenant.signal.v1+json"
INTOTO_TYPE = "application/vnd.in-toto+json"


class Failed(Exception):
    pass


def envelope_payload(body):
    env = cv.parse_envelope(body)
    return env, cv.b64decode_any(env["payload"])


def verify_one(body, payload_type, public):
    """The envelope carries one signature, by `public`, over PAE."""
    cv.verify_envelope(body, payload_type, [public], 1, "signature")


def first_keyid(body):
    env = cv.parse_envelope(body)
    return env["signatures"][0]["keyid"] if env["signatures"] else None


def main(pack):
    read = lambda name: open(os.path.join(pack, name), "rb").read()  # noqa: E731
    index = json.loads(read("index.json"))
    if index.get("format") != "covenant-evidence-pack/v1":
        raise Failed("index.json: not covenant-evidence-pack/v1")

    # 1. The root chain, from roots/1.json (trusted on first use).
    versions = sorted(int(f[:-5]) for f in os.listdir(os.path.join(pack, "roots")) if f.endswith(".json"))
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise Failed(f"the root chain: versions {versions}")
    chain = [read(f"roots/{v}.json") for v in versions]
    root = cv.verify_root(chain[0])
    roots = [root]
    for data in chain[1:]:
        root = cv.verify_root(data, root)
        roots.append(root)
    admin = {cv.key_id(p): p for r in roots for p in r.publics("admin")}
    decision = {cv.key_id(p): p for r in roots for p in r.publics("decision")}

    # 2. The checkpoint: the newest root's ledger key, its witness threshold.
    cp = cv.verify_checkpoint(read("checkpoint"), root, "the checkpoint")
    cv.require_witnesses(cp, root)
    if cp.size != index["tree_size"]:
        raise Failed("the checkpoint: its size is not index.json's tree_size")

    # 3 to 5 in one pass over the headers, the entries merged in by index.
    keys = {s: bytes.fromhex(k) for s, k in index.get("subject_keys", {}).items()}
    withheld = {w["index"]: w["kind"] for w in index.get("withheld", [])}
    rng = index.get("range")
    everything = index["selection"]["kind"] == "all"
    entries = [json.loads(line) for line in read("entries.jsonl").decode().splitlines() if line]
    by_index = {}
    for e in entries:
        if e["index"] in by_index:
            raise Failed(f"entries.jsonl: entry {e['index']} twice")
        by_index[e["index"]] = e
    registered = {}  # key id -> public key, from identity entries of the pack
    stack = []  # the compact range: (height, hash)
    count = 0
    with open(os.path.join(pack, "headers"), "rb") as f:
        for i, line in enumerate(f):
            if not line.endswith(b"\n"):
                raise Failed("the headers: the last line has no newline")
            raw = line[:-1]
            leaf = cv.leaf_hash(raw)
            # Fold the leaf into the compact range (RFC 9162's tree).
            h, height = leaf, 0
            while stack and stack[-1][0] == height:
                h = cv.node(stack.pop()[1], h)
                height += 1
            stack.append((height, h))
            count += 1
            header = json.loads(raw)
            e = by_index.get(i)
            if e is not None:
                check_entry(i, e, header, leaf, cp, admin, decision, registered, chain)
                continue
            if rng is None or not (rng[0] <= i <= rng[1]):
                continue
            digest = bytes.fromhex(header["body_digest"])
            tagged = any(
                hmac.new(k, digest, hashlib.sha256).digest()[:16].hex() in header.get("tags", []) for k in keys.values()
            )
            if not (everything or tagged):
                continue
            if i not in withheld:
                raise Failed(f"the pack is incomplete: entry {i} ({header['kind']}) is missing")
            if withheld[i] in ("grant", "withhold") or withheld[i] != header["kind"]:
                raise Failed(f"the pack is incomplete: entry {i} is withheld as {withheld[i]}")
    if count != cp.size:
        raise Failed(f"the headers: {count} lines, the checkpoint's tree has {cp.size}")
    # The root: fold the peaks from the right.
    acc = None
    for _, h in reversed(stack):
        acc = h if acc is None else cv.node(h, acc)
    if (acc or cv.sha256(b"")) != cp.root_hash:
        raise Failed("the headers: they do not reproduce the checkpoint's root hash")
    missing = [i for i in by_index if i >= cp.size]
    if missing:
        raise Failed(f"entries.jsonl: entry {missing[0]} is past the tree")
    return len(entries), cp.size


def check_entry(i, e, header, leaf, cp, admin, decision, registered, chain):
    salt, body = bytes.fromhex(e["salt"]), base64.b64decode(e["body"], validate=True)
    if hashlib.sha256(salt + body).hexdigest() != header["body_digest"]:
        raise Failed(f"entry {i}: its body does not match its header")
    proof = [bytes.fromhex(p) for p in e["proof"]]
    if not cv.verify_inclusion(i, cp.size, leaf, proof, cp.root_hash):
        raise Failed(f"entry {i}: its inclusion proof does not verify")
    env, payload = envelope_payload(body)
    kind, ptype, signer = header["kind"], env["payloadType"], first_keyid(body)
    try:
        if kind == "root":
            if body not in chain:
                raise Failed(f"entry {i}: a root that is not one of the pack's roots")
        elif kind == "release":
            pass  # checked below against every root's release keys
        elif kind in ("grant", "withhold"):
            verify_one(body, cv.DECISION_TYPE, decision[signer])
            checkin = json.loads(payload)["checkin"]
            checkin = base64.b64decode(checkin) if isinstance(checkin, str) else bytes(checkin)
            verify_one(checkin, cv.CHECKIN_TYPE, registered[first_keyid(checkin)])
        elif kind in ("attestation", "verification", "report", "signal"):
            verify_one(body, ptype, registered[signer])
        else:
            verify_one(body, ACTION_TYPE, admin[signer])
            action = json.loads(payload)["action"]
            if action.get("what") == "issue_identity":
                public = bytes.fromhex(action["signing_key"])
                registered[cv.key_id(public)] = public
    except KeyError as err:
        raise Failed(f"entry {i}: its signature: no key {err} registered in the pack") from err
    except cv.Refused as err:
        raise Failed(f"entry {i}: its signature: {err}") from err
    if kind == "release":
        ok = False
        for data in chain:
            r = json.loads(cv.b64decode_any(cv.parse_envelope(data)["payload"]))
            publics = [bytes.fromhex(k["public"]) for k in r["roles"]["release"]["keys"]]
            try:
                cv.verify_envelope(body, cv.RELEASE_TYPE, publics, r["roles"]["release"]["threshold"], "release")
                ok = True
                break
            except cv.Refused:
                continue
        if not ok:
            raise Failed(f"entry {i}: its signature: no root's release threshold")


if __name__ == "__main__":
    try:
        n, size = main(sys.argv[1])
    except (Failed, cv.Refused, ValueError, KeyError, OSError) as err:
        print(f"FAILED {err}")
        sys.exit(1)
    print(f"OK {n} {size}")
