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
RESTORE_LOSS_TYPE = "application/vnd.covenant.restore-loss.v1+json"
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
    sel = index["selection"]
    if sel["kind"] not in ("all", "customer", "deployment", "case"):
        raise Failed(f"index.json: unknown selection kind {sel['kind']!r}")
    everything = sel["kind"] == "all"
    # The range comes from the selection alone, never from the pack.
    case_n = int(sel["id"][len("case-"):]) if sel["kind"] == "case" else 0
    start_t = cv.parse_time(sel["from"]) if sel.get("from") else None
    end_t = cv.parse_time(sel["to"]) if sel.get("to") else None

    def in_range(i, header):
        t = cv.parse_time(header["time"])
        return i >= case_n and (start_t is None or t >= start_t) and (end_t is None or t <= end_t)

    entries = [json.loads(line) for line in read("entries.jsonl").decode().splitlines() if line]
    by_index = {}
    last = -1
    for e in entries:
        if e["index"] <= last:
            raise Failed(f"entries.jsonl: entry {e['index']} is out of order or repeated")
        last = e["index"]
        by_index[e["index"]] = e
    seen_customers, seen_deployments, signal_about = set(), {}, None
    withheld_found = 0
    registered = {}  # key id -> public key, from identity entries of the pack
    stack = []  # the compact range: (height, hash)
    count = 0
    roots_logged = 0
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
            inside = in_range(i, header)
            e = by_index.get(i)
            if e is not None and header["kind"] == "root":
                roots_logged += 1
            if e is not None:
                if not inside and header["kind"] not in ("identity", "customer", "deployment"):
                    raise Failed(f"entries.jsonl: entry {i} is outside the selection's range")
                payload_type, payload = check_entry(i, e, header, leaf, cp, admin, decision, registered, chain)
                # Each subject key naming one of the entry's subjects must
                # reproduce one of its tags (evidence.md, step 4).
                digest = bytes.fromhex(header["body_digest"])
                for subject in subjects_of(payload_type, payload):
                    k = keys.get(subject)
                    if k is not None and hmac.new(k, digest, hashlib.sha256).digest()[:16].hex() not in header.get("tags", []):
                        raise Failed(f"the subject key of {subject}: it does not reproduce a tag of entry {i}")
                action = payload.get("action", {}) if payload_type == ACTION_TYPE else {}
                if action.get("what") == "register_customer":
                    seen_customers.add(action["customer"])
                if action.get("what") == "register_deployment":
                    seen_deployments[action["deployment"]] = action["customer"]
                if payload_type == SIGNAL_TYPE and i == case_n:
                    signal_about = payload["about"]
                continue
            digest = bytes.fromhex(header["body_digest"])
            tagged = any(
                hmac.new(k, digest, hashlib.sha256).digest()[:16].hex() in header.get("tags", []) for k in keys.values()
            )
            # A registration of a subject the pack holds a key for is never
            # left out, whatever the range (evidence.md, step 5).
            if tagged and header["kind"] in ("customer", "deployment"):
                raise Failed(f"the pack is incomplete: entry {i} ({header['kind']}) registers a subject of the pack and is missing")
            if header["kind"] == "root":
                roots_logged += 1
            if not inside:
                continue
            if not (everything or tagged):
                continue
            if i not in withheld:
                raise Failed(f"the pack is incomplete: entry {i} ({header['kind']}) is missing")
            if withheld[i] in ("grant", "withhold") or withheld[i] != header["kind"]:
                raise Failed(f"the pack is incomplete: entry {i} is withheld as {withheld[i]}")
            withheld_found += 1
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
    if roots_logged != len(chain):
        raise Failed(f"roots/: the tree logs {roots_logged} root versions and the pack's chain holds {len(chain)}")
    if withheld_found != len(withheld):
        raise Failed("index.json: it lists as withheld an entry that is not the selection's")
    # The selection's own subjects have keys, bound by their registrations.
    need = []
    if sel["kind"] == "customer":
        need = [(sel["id"], sel["id"] in seen_customers)]
        need += [(d, True) for d, c in seen_deployments.items() if c == sel["id"]]
    elif sel["kind"] == "deployment":
        need = [(sel["id"], sel["id"] in seen_deployments)]
    elif sel["kind"] == "case":
        if signal_about is None:
            raise Failed(f"the pack is incomplete: entry {case_n} (signal) is missing")
        need = [(signal_about["customer"], signal_about["customer"] in seen_customers)]
        if signal_about.get("deployment"):
            need.append((signal_about["deployment"], signal_about["deployment"] in seen_deployments))
        else:
            # About the whole customer: every one of its deployments.
            need += [(d, True) for d, c in seen_deployments.items() if c == signal_about["customer"]]
    for subject, registered_in_pack in need:
        if subject not in keys or not registered_in_pack:
            raise Failed(f"the subject key of {subject}: missing, or not bound by its registration in the pack")
    return len(entries), cp.size


def subjects_of(payload_type, payload):
    """The ids an entry's body names, as docs/formats.md section 14 lists them."""
    if payload_type == ACTION_TYPE:
        a = payload["action"]
        what = a.get("what")
        if what == "issue_identity":
            return [a["subject"]]
        if what == "register_customer":
            return [a["customer"]]
        if what == "register_deployment":
            return [a["customer"], a["deployment"]]
        if what == "set_contract":
            return [a["contract"]["customer"]]
        if what == "propose_suspension":
            return list(a["target"].values())
        if what in ("propose_waiver", "propose_security_fix"):
            return [a["deployment"]]
        if what == "record_licence":
            return [a["licence"]["customer"]]
        return []
    if payload_type in (cv.DECISION_TYPE, cv.REPORT_TYPE):
        return [payload["deployment"]]
    if payload_type == INTOTO_TYPE:
        p = payload["predicate"]
        if "deployment" in p:
            return [p["deployment"]]
        names = sorted({s["name"] for s in payload["subject"]})
        return [p["customer"]] + (names if len(names) < 16 else [])
    return []


def check_entry(i, e, header, leaf, cp, admin, decision, registered, chain):
    salt, body = bytes.fromhex(e["salt"]), base64.b64decode(e["body"], validate=True)
    if hashlib.sha256(salt + body).hexdigest() != header["body_digest"]:
        raise Failed(f"entry {i}: its body does not match its header")
    proof = [bytes.fromhex(p) for p in e["proof"]]
    if not cv.verify_inclusion(i, cp.size, leaf, proof, cp.root_hash):
        raise Failed(f"entry {i}: its inclusion proof does not verify")
    env, payload = envelope_payload(body)
    kind, ptype, signer = header["kind"], env["payloadType"], first_keyid(body)
    parsed = json.loads(payload)
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
        elif kind == "note" and ptype == RESTORE_LOSS_TYPE:
            verify_one(body, RESTORE_LOSS_TYPE, decision[signer])  # a restore's accepted loss
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
    return ptype, parsed


if __name__ == "__main__":
    try:
        n, size = main(sys.argv[1])
    except (Failed, cv.Refused, ValueError, KeyError, OSError) as err:
        print(f"FAILED {err}")
        sys.exit(1)
    print(f"OK {n} {size}")
