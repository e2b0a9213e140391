"""Covenant's formats and a check-in answer's verification, in Python.

Written from docs/formats.md (sections 1-2, 4-5, 8-11, 14-16, 18) and the
.proto alone, never from the Rust code: it proves those documents are enough
to build a device client in another language. Pure functions, no I/O: the
network and the files are covenant_client.py's.
"""

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROOT_TYPE = "application/vnd.covenant.root.v1+json"
RELEASE_TYPE = "application/vnd.covenant.release.v1+json"
CHECKIN_TYPE = "application/vnd.covenant.checkin.v1+json"
DECISION_TYPE = "application/vnd.covenant.decision.v1+json"
FRESH_TYPE = "application/vnd.covenant.fresh.v1+json"
REPORT_TYPE = "application/vnd.covenant.report.v1+json"

# Cosignature timestamps past this are ignored (formats.md section 18, step 8).
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
LOG_KEY_TYPE = 0x01
COSIGNATURE_KEY_TYPE = 0x04
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Refused(Exception):
    """A check failed: `step` names it (the step of formats.md section 18)."""

    def __init__(self, step, why):
        super().__init__(f"{step}: {why}")
        self.step = step


def sha256(data):
    return hashlib.sha256(data).digest()


# --- Conventions (section 1) ------------------------------------------------


def utc(ts):
    """Formats whole seconds since the epoch as Covenant writes timestamps."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """Reads an RFC 3339 timestamp (any offset) as whole UNIX seconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def hex_digest(text, step):
    if not isinstance(text, str) or not HEX64.match(text):
        raise Refused(step, f"not a lowercase hex digest: {text!r}")
    return bytes.fromhex(text)


def parse_version(text):
    """A SemVer 2.0 version as a sortable key (build metadata ignored)."""
    m = re.match(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$", text)
    if not m:
        raise ValueError(f"not a version: {text!r}")
    core = tuple(int(x) for x in m.group(1, 2, 3))
    if m.group(4) is None:
        return core + ((1,),)  # a release sorts after its pre-releases
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split("."))
    return core + ((0, ids),)


def key_id(public_bytes):
    """The lowercase hex key id of a 32-byte Ed25519 public key."""
    return hashlib.sha256(public_bytes).hexdigest()


# --- DSSE (section 2) --------------------------------------------------------


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def b64decode_any(text):
    """Standard base64 with padding; URL-safe is read too (section 1)."""
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"bad base64: {e}") from e


def parse_envelope(data):
    env = json.loads(data)
    if not isinstance(env, dict) or set(env) != {"payloadType", "payload", "signatures"}:
        raise ValueError("not a DSSE envelope")
    if len(env["signatures"]) > 32:
        raise ValueError("more than 32 signatures")
    return env


def sign_envelope(payload_type, payload, key):
    """A DSSE envelope of `payload` with one signature by `key`."""
    public = key.public_key().public_bytes_raw()
    sig = key.sign(pae(payload_type, payload))
    env = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key_id(public), "sig": base64.b64encode(sig).decode()}],
    }
    return json.dumps(env, separators=(",", ":")).encode()


def verify_envelope(data, payload_type, publics, threshold, step):
    """Checks an envelope's type and a threshold of distinct keys of
    `publics` (32-byte public keys), then returns (payload bytes, parsed)."""
    try:
        env = parse_envelope(data)
    except (ValueError, TypeError) as e:
        raise Refused(step, f"malformed envelope: {e}") from e
    if env["payloadType"] != payload_type:
        raise Refused(step, f"payload type {env['payloadType']!r}, expected {payload_type!r}")
    try:
        payload = b64decode_any(env["payload"])
    except ValueError as e:
        raise Refused(step, str(e)) from e
    keys = {key_id(p): p for p in publics}
    message = pae(payload_type, payload)
    good = set()
    for s in env["signatures"]:
        kid = s.get("keyid") if isinstance(s, dict) else None
        if kid not in keys:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(keys[kid]).verify(b64decode_any(s.get("sig", "")), message)
            good.add(kid)
        except (InvalidSignature, ValueError):
            continue
    if threshold < 1 or len(good) < threshold:
        raise Refused(step, f"{len(good)} valid signature(s) of the {threshold} required")
    try:
        return payload, json.loads(payload)
    except ValueError as e:
        raise Refused(step, f"payload is not JSON: {e}") from e


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --- Root (section 4) --------------------------------------------------------


@dataclass
class Root:
    envelope: bytes
    meta: dict

    @property
    def version(self):
        return self.meta["version"]

    def role(self, name):
        return self.meta["roles"][name]

    def publics(self, name):
        return [bytes.fromhex(k["public"]) for k in self.role(name)["keys"]]

    def threshold(self, name):
        return self.role(name)["threshold"]

    def note_keys(self, name, key_type):
        """{(note name, 4-byte key id): public key} of a ledger or witness role."""
        out = {}
        for k in self.role(name)["keys"]:
            public = bytes.fromhex(k["public"])
            out[(k["note_name"], note_key_id(k["note_name"], key_type, public))] = public
        return out


def verify_root(data, previous=None):
    """A root signed by a threshold of its own root keys and, for version N+1,
    of version N's (section 4)."""
    try:
        meta = json.loads(b64decode_any(parse_envelope(data)["payload"]))
    except (ValueError, TypeError, KeyError) as e:
        raise Refused("root chain", f"malformed root: {e}") from e
    if meta.get("_type") != "root" or meta.get("schema") != 1:
        raise Refused("root chain", "not a schema 1 root")
    root = Root(data, meta)
    verify_envelope(data, ROOT_TYPE, root.publics("root"), root.threshold("root"), "root chain")
    if previous is not None:
        if root.version != previous.version + 1:
            raise Refused("root chain", f"version {root.version} after {previous.version}")
        verify_envelope(data, ROOT_TYPE, previous.publics("root"), previous.threshold("root"), "root chain")
        if meta.get("development", False) and not previous.meta.get("development", False):
            raise Refused("root chain", "a production root is followed by a development one")
        names = lambda r: sorted(k["note_name"] for k in r.role("ledger")["keys"])  # noqa: E731
        if names(root) != names(previous):
            raise Refused("root chain", "the ledger's note names changed")
    return root


def newest_root(root, chain):
    """Walks the root envelopes served, oldest first, from the trusted `root`
    (section 18, step 1, without the expiry check)."""
    for data in chain:
        try:
            v = json.loads(b64decode_any(parse_envelope(data)["payload"]))["version"]
        except (ValueError, TypeError, KeyError) as e:
            raise Refused("root chain", f"malformed root: {e}") from e
        if v > root.version:
            root = verify_root(data, root)
    return root


# --- Signed notes, checkpoints, cosignatures (section 15) -------------------


def note_key_id(name, key_type, public):
    return sha256(name.encode() + b"\n" + bytes([key_type]) + public)[:4]


def parse_vkey(text):
    """`<name>+<8 hex key id>+<base64(type || public key)>` -> (name, id, type, public)."""
    name, kid, rest = text.strip().split("+", 2)
    raw = base64.b64decode(rest)
    if len(raw) != 33 or note_key_id(name, raw[0], raw[1:]) != bytes.fromhex(kid):
        raise ValueError(f"bad verifier key {text!r}")
    return name, bytes.fromhex(kid), raw[0], raw[1:]


@dataclass
class Checkpoint:
    text: bytes
    origin: str
    size: int
    root_hash: bytes
    note: bytes
    signatures: list = field(default_factory=list)  # (name, key id, signature bytes)
    witnessed_times: list = field(default_factory=list)


def parse_note(note):
    """(text, [(name, 4-byte key id, rest of the signature bytes)])."""
    if len(note) > 64 * 1024:
        raise ValueError("note over 64 KiB")
    end = note.find(b"\n\n")
    if end < 0:
        raise ValueError("no blank line before the signatures")
    text, sigs = note[: end + 1], note[end + 2 :].decode()
    lines = sigs.split("\n")
    if lines[-1] != "" or len(lines) - 1 > 64:
        raise ValueError("bad signature lines")
    out = []
    for line in lines[:-1]:
        if not line.startswith("\u2014 "):
            raise ValueError(f"bad signature line {line!r}")
        name, _, b64 = line[2:].rpartition(" ")
        raw = base64.b64decode(b64, validate=True)
        if len(raw) < 4:
            raise ValueError("short signature")
        out.append((name, raw[:4], raw[4:]))
    return text, out


def verify_checkpoint(note, root, step):
    """A checkpoint signed by a ledger key the root names, with every
    cosignature by a known witness verified; returns the Checkpoint with the
    timestamps of the valid cosignatures, one per distinct witness."""
    try:
        text, sigs = parse_note(note)
        lines = text.decode().split("\n")
        origin, size, root_hash = lines[0], lines[1], base64.b64decode(lines[2], validate=True)
        if not re.match(r"^(0|[1-9]\d*)$", size) or len(root_hash) != 32:
            raise ValueError("bad size or root hash")
    except (ValueError, IndexError, UnicodeDecodeError, binascii.Error) as e:
        raise Refused(step, f"malformed checkpoint: {e}") from e
    cp = Checkpoint(text, origin, int(size), root_hash, note, sigs)
    logs = root.note_keys("ledger", LOG_KEY_TYPE)
    witnesses = root.note_keys("witness", COSIGNATURE_KEY_TYPE)
    signed = False
    times = {}
    for name, kid, sig in sigs:
        if (name, kid) in logs:
            try:
                Ed25519PublicKey.from_public_bytes(logs[(name, kid)]).verify(sig, text)
            except InvalidSignature as e:
                raise Refused(step, f"the ledger signature by {name} does not verify") from e
            signed = signed or name == origin
        elif (name, kid) in witnesses:
            if len(sig) != 72:
                raise Refused(step, f"a cosignature by {name} is not 8 + 64 bytes")
            t = int.from_bytes(sig[:8], "big")
            message = b"cosignature/v1\ntime %d\n" % t + text
            try:
                Ed25519PublicKey.from_public_bytes(witnesses[(name, kid)]).verify(sig[8:], message)
            except InvalidSignature as e:
                raise Refused("witnesses", f"the cosignature by {name} does not verify") from e
            times[name] = max(times.get(name, 0), t)
    if not signed:
        raise Refused(step, f"no valid signature by a ledger key of the root for origin {origin!r}")
    cp.witnessed_times = sorted(times.values(), reverse=True)
    return cp


def require_witnesses(cp, root):
    k = root.threshold("witness")
    if len(cp.witnessed_times) < k:
        raise Refused("witnesses", f"{len(cp.witnessed_times)} witness cosignature(s) of the {k} required")


def witnessed_time(cp, root):
    """The k-th newest cosignature time, k being the witness threshold (step 8)."""
    k = root.threshold("witness")
    times = [t for t in cp.witnessed_times if t <= MAX_TIMESTAMP]
    return times[k - 1] if k >= 1 and len(times) >= k else None


# --- Proofs (section 16) -----------------------------------------------------


def leaf_hash(header):
    return sha256(b"\x00" + header)


def node(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(index, size, leaf, proof, root_hash):
    """RFC 9162 section 2.1.3.2."""
    if index >= size or any(len(p) != 32 for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def verify_consistency(first, second, first_hash, second_hash, proof):
    """RFC 9162 section 2.1.4.2 (a proof from size 0 is refused)."""
    if first == 0 or first > second or any(len(p) != 32 for p in proof):
        return False
    if first == second:
        return not proof and first_hash == second_hash
    if first & (first - 1) == 0:
        proof = [first_hash] + list(proof)
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def parse_tlog_proof(text):
    """(index, [hashes], checkpoint note bytes) of a C2SP tlog-proof."""
    if len(text) > 72 * 1024:
        raise ValueError("tlog-proof over 72 KiB")
    head, sep, note = text.partition(b"\n\n")
    if not sep:
        raise ValueError("no blank line before the checkpoint")
    lines = head.decode().split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1":
        raise ValueError("not a c2sp.org/tlog-proof@v1")
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        rest = rest[1:]
    if not rest or not re.match(r"^index (0|[1-9]\d*)$", rest[0]):
        raise ValueError("no index line")
    hashes = [base64.b64decode(h, validate=True) for h in rest[1:]]
    if len(hashes) > 64 or any(len(h) != 32 for h in hashes):
        raise ValueError("bad proof hashes")
    return int(rest[0][6:]), hashes, note


# --- A check-in answer (section 18) ------------------------------------------


@dataclass
class Trust:
    """What the device trusts between check-ins."""

    root: Root
    checkpoint: Checkpoint = None
    time: int = 0  # the newest witnessed time


@dataclass
class Device:
    deployment: str
    product: str
    installed: str
    max_grant_seconds: int = 7 * 86400
    max_artifact_bytes: int = 1 << 30
    allow_development: bool = False


@dataclass
class Ruling:
    verdict: str  # current, withheld or granted
    trust: Trust
    decision: dict = None
    index: int = None
    manifest: dict = None
    release_digest: bytes = None


def verify_answer(trust, device, nonce_hex, answer, root_chain, clock):
    """formats.md section 18, steps 1 to 11. `answer` is a CheckInResponse,
    `root_chain` the envelopes GetRootChain served, `clock` the device's time
    (UNIX seconds). Returns a Ruling or raises Refused."""
    now = max(clock, trust.time)
    # 1. Root chain.
    root = newest_root(trust.root, root_chain)
    if root.meta.get("development", False) and not device.allow_development:
        raise Refused("root chain", "a development root, and development roots are not allowed")
    if parse_time(root.meta["expires"]) <= now:
        raise Refused("root chain", "the newest root has expired")
    # 2. Freshness.
    _, fresh = verify_envelope(answer.freshness, FRESH_TYPE, root.publics("decision"), root.threshold("decision"), "freshness")
    if fresh.get("_type") != "fresh" or fresh.get("deployment") != device.deployment:
        raise Refused("freshness", f"the answer is for deployment {fresh.get('deployment')!r}")
    if fresh.get("nonce") != nonce_hex:
        raise Refused("freshness", "the nonce is not the one sent: a replayed answer")
    now = max(now, parse_time(fresh["time"]))
    # 3. What stands.
    standing = fresh.get("standing", {})
    has_entry = answer.HasField("decision")
    if standing.get("verdict") == "current":
        if has_entry:
            raise Refused("standing", "current, yet an entry came with it")
        return Ruling("current", Trust(root, trust.checkpoint, trust.time))
    if standing.get("verdict") != "standing" or not has_entry:
        raise Refused("standing", "no standing entry")
    index, size = standing["index"], standing["checkpoint_size"]
    # 4. The entry.
    entry = answer.decision
    leaf = leaf_hash(entry.header)
    if leaf != hex_digest(standing["leaf_hash"], "entry"):
        raise Refused("entry", "the header's leaf hash is not the freshness answer's")
    try:
        header = json.loads(entry.header)
    except ValueError as e:
        raise Refused("entry", f"the header is not JSON: {e}") from e
    if len(entry.salt) != 32 or sha256(entry.salt + entry.body) != hex_digest(header.get("body_digest"), "entry"):
        raise Refused("entry", "SHA-256(salt || body) is not the header's body_digest")
    if header.get("kind") not in ("grant", "withhold"):
        raise Refused("entry", f"an entry of kind {header.get('kind')!r}")
    # 5. Inclusion.
    try:
        proof_index, hashes, note = parse_tlog_proof(answer.inclusion.text)
    except (ValueError, UnicodeDecodeError, binascii.Error) as e:
        raise Refused("inclusion", f"malformed tlog-proof: {e}") from e
    if proof_index != index:
        raise Refused("inclusion", f"the proof is of entry {proof_index}, not {index}")
    cp = verify_checkpoint(note, root, "inclusion")
    if cp.size != size:
        raise Refused("inclusion", f"the checkpoint has size {cp.size}, not {size}")
    if not verify_inclusion(index, cp.size, leaf, hashes, cp.root_hash):
        raise Refused("inclusion", f"entry {index} is not proven in the checkpoint of size {cp.size}")
    # 6. Witnesses.
    require_witnesses(cp, root)
    # 7. Consistency.
    held = trust.checkpoint
    if held is not None:
        if cp.size < held.size:
            raise Refused("consistency", f"the checkpoint shrank from {held.size} to {cp.size}")
        if not verify_consistency(held.size, cp.size, held.root_hash, cp.root_hash, list(answer.consistency)):
            raise Refused("consistency", f"no valid consistency proof from size {held.size} to {cp.size}")
    # 8. Witnessed time.
    witnessed = max(trust.time, witnessed_time(cp, root) or 0)
    now = max(now, witnessed)
    new_trust = Trust(root, cp, witnessed)
    # 9. The decision.
    _, decision = verify_envelope(entry.body, DECISION_TYPE, root.publics("decision"), root.threshold("decision"), "decision")
    if decision.get("_type") != "decision" or decision.get("deployment") != device.deployment:
        raise Refused("decision", f"a decision for {decision.get('deployment')!r}")
    if decision.get("verdict") != header["kind"]:
        raise Refused("decision", "the verdict is not the entry's kind")
    if decision["verdict"] == "withhold":
        return Ruling("withheld", new_trust, decision, index)
    # 10. The grant.
    expires, issued = parse_time(decision["expires_at"]), parse_time(decision["issued_at"])
    if expires <= now:
        raise Refused("grant", "the grant has expired")
    if expires - issued > device.max_grant_seconds:
        raise Refused("grant", "the grant is valid for longer than this device allows")
    payload, manifest = verify_envelope(answer.release_manifest, RELEASE_TYPE, root.publics("release"), root.threshold("release"), "grant")
    digest = sha256(payload)
    if digest != hex_digest(decision.get("release"), "grant"):
        raise Refused("grant", "the manifest is not the release the grant names")
    if manifest.get("_type") != "release" or manifest.get("product") != device.product:
        raise Refused("grant", f"a release of product {manifest.get('product')!r}")
    if parse_version(manifest["version"]) <= parse_version(device.installed):
        raise Refused("grant", f"version {manifest['version']} is not newer than {device.installed}")
    if manifest["artifact"]["size"] > device.max_artifact_bytes:
        raise Refused("grant", "the artifact is larger than this device takes")
    # 11. The caller stores new_trust.
    return Ruling("granted", new_trust, decision, index, manifest, digest)


def new_signing_key():
    return Ed25519PrivateKey.generate()
