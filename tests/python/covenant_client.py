"""A Covenant device client in Python, written from docs/ and the .proto alone.

    covenant_client.py keygen --state DIR
        makes the device's Ed25519 signing key, its TLS key (ECDSA P-256) and
        a certificate request naming the signing key (DIR/request.csr), for
        `covenant admin enroll DEPLOYMENT --csr DIR/request.csr --out BUNDLE`.
    covenant_client.py run --state DIR --bundle BUNDLE --product P --installed V
        takes the provisioning bundle, checks in over mutual TLS, verifies the
        answer itself (formats.md section 18), downloads and hashes the
        artifact, reports the install, checks in again, then checks that
        tampered answers are refused. Prints one JSON object; exits non-zero
        on any failure.

The gRPC stubs are generated from the .proto (grpcio-tools) into a temporary
folder at each run; nothing generated is kept.
"""

import argparse
import atexit
import base64
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import covenant_verify as cv

WORKSPACE = Path(__file__).resolve().parents[2]
# Seconds any one call may take.
CALL_TIMEOUT = 60


def stubs(proto_root):
    """Generates covenant/v1/covenant_pb2{,_grpc}.py into a temporary folder
    and imports them."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="covenant-py-stubs-")
    atexit.register(shutil.rmtree, out, True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", "covenant/v1/covenant.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    from covenant.v1 import covenant_pb2, covenant_pb2_grpc

    return covenant_pb2, covenant_pb2_grpc


def write_private(path, key):
    """Writes a private key, PKCS#8 PEM, readable by its owner only."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def keygen(state):
    state.mkdir(parents=True, exist_ok=True)
    signing = cv.new_signing_key()
    write_private(state / "signing.pem", signing)
    tls = ec.generate_private_key(ec.SECP256R1())
    write_private(state / "key.pem", tls)
    public = signing.public_key().public_bytes_raw().hex()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "covenant device")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:covenant:ed25519:{public}")]), critical=False)
        .sign(tls, hashes.SHA256())
    )
    (state / "request.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return public


def provision(bundle):
    """Reads the provisioning bundle (formats.md section 19): the root must
    verify, and ledger.vkey and witnesses.vkeys must be the root's keys."""
    root = cv.verify_root((bundle / "root.json").read_bytes())
    for file, role, key_type in (("ledger.vkey", "ledger", cv.LOG_KEY_TYPE), ("witnesses.vkeys", "witness", cv.COSIGNATURE_KEY_TYPE)):
        path = bundle / file
        listed = set()
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    name, kid, kt, public = cv.parse_vkey(line)
                    listed.add((name, kid, kt, public))
        expected = {(n, k, key_type, p) for (n, k), p in root.note_keys(role, key_type).items()}
        if listed != expected:
            raise SystemExit(f"{file} does not match the root's {role} keys")
    return root


class Client:
    def __init__(self, args):
        import grpc

        self.pb, self.grpc_stubs = stubs(args.proto)
        self.bundle, self.state = args.bundle, args.state
        self.deployment = (self.bundle / "deployment").read_text().strip()
        self.device = cv.Device(self.deployment, args.product, args.installed, allow_development=args.allow_development)
        self.trust = cv.Trust(provision(self.bundle))
        self.signing = serialization.load_pem_private_key((self.state / "signing.pem").read_bytes(), None)
        url = urlparse((self.bundle / "server").read_text().strip())
        if url.scheme != "https":
            raise SystemExit("the server address must be https://")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.bundle / "ca.pem").read_bytes(),
            private_key=(self.state / "key.pem").read_bytes(),
            certificate_chain=(self.bundle / "cert.pem").read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(url.netloc, credentials, options=options)
        # Fail fast (a TLS or name mismatch otherwise retries for ever).
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        self.updates = self.grpc_stubs.UpdateServiceStub(channel)
        self.ledger = self.grpc_stubs.LedgerServiceStub(channel)

    def root_chain(self):
        return list(self.ledger.GetRootChain(self.pb.GetRootChainRequest(from_version=self.trust.root.version + 1), timeout=CALL_TIMEOUT).roots)

    def first_checkpoint(self):
        """Trust on first use of a checkpoint: signed by the ledger key and
        cosigned by the witness threshold (waits for a witness round)."""
        root = cv.newest_root(self.trust.root, self.root_chain())
        for _ in range(100):
            note = self.ledger.GetCheckpoint(self.pb.GetCheckpointRequest(), timeout=CALL_TIMEOUT).note
            cp = cv.verify_checkpoint(note, root, "checkpoint")
            try:
                cv.require_witnesses(cp, root)
            except cv.Refused:
                time.sleep(0.1)
                continue
            self.trust = cv.Trust(root, cp, cv.witnessed_time(cp, root) or 0)
            return cp
        raise SystemExit("no cosigned checkpoint came")

    def held(self):
        cp = self.trust.checkpoint
        return {"size": cp.size, "root_hash": cp.root_hash.hex()} if cp else None

    def checkin(self):
        nonce = os.urandom(32).hex()
        body = {
            "_type": "checkin",
            "schema": 1,
            "deployment": self.deployment,
            "product": self.device.product,
            "installed_version": self.device.installed,
            "installed_baseline": self.device.installed,
            "software_digests": {},
            "configuration_digest": hashlib.sha256(b"the python client's configuration").hexdigest(),
            "nonce": nonce,
            "time": cv.utc(int(time.time())),
        }
        if self.trust.checkpoint:
            body["last_checkpoint"] = self.held()
        envelope = cv.sign_envelope(cv.CHECKIN_TYPE, cv.compact(body), self.signing)
        answer = self.updates.CheckIn(self.pb.CheckInRequest(checkin=envelope), timeout=CALL_TIMEOUT)
        return nonce, answer

    def check(self):
        """Checks in until an answer verifies (an answer without the witness
        threshold is refused and retried, as formats.md section 15 says)."""
        for attempt in range(5):
            before = self.trust
            nonce, answer = self.checkin()
            clock = int(time.time())
            try:
                ruling = cv.verify_answer(before, self.device, nonce, answer, self.root_chain(), clock)
            except cv.Refused as e:
                if e.step == "witnesses" and attempt < 4:
                    continue
                fresh = json.loads(cv.b64decode_any(json.loads(answer.freshness)["payload"]))
                print(f"refused: {e}; freshness {fresh}", file=sys.stderr)
                raise
            self.trust = ruling.trust
            return ruling, (before, dataclasses.replace(self.device), nonce, answer, clock)
        raise AssertionError("unreachable")

    def download(self, ruling):
        artifact = ruling.manifest["artifact"]
        size, want = artifact["size"], bytes.fromhex(artifact["sha256"])
        digest, received = hashlib.sha256(), 0
        path = self.state / artifact["name"]
        with open(path, "wb") as f:
            for chunk in self.updates.Download(self.pb.DownloadRequest(release_digest=ruling.release_digest, offset=0), timeout=CALL_TIMEOUT):
                if chunk.offset != received or received + len(chunk.data) > size:
                    raise SystemExit(f"chunk at {chunk.offset} after {received} bytes of {size}")
                digest.update(chunk.data)
                f.write(chunk.data)
                received += len(chunk.data)
                if received == size:
                    break
        if received != size or digest.digest() != want:
            raise SystemExit("the artifact's size or SHA-256 is not the manifest's")
        return path

    def report(self, ruling):
        body = {
            "_type": "report",
            "schema": 1,
            "deployment": self.deployment,
            "grant_index": ruling.index,
            "outcome": "installed",
            "from_version": self.device.installed,
            "to_version": ruling.manifest["version"],
            "last_checkpoint": self.held(),
            "time": cv.utc(int(time.time())),
        }
        envelope = cv.sign_envelope(cv.REPORT_TYPE, cv.compact(body), self.signing)
        answer = self.updates.Report(self.pb.ReportRequest(report=envelope), timeout=CALL_TIMEOUT)
        self.verify_logged(answer.index, envelope, answer.inclusion.text)
        return answer.index, body

    def verify_logged(self, index, envelope, proof):
        """The report is in the ledger: its entry holds our exact bytes, and
        the tlog-proof proves it in a checkpoint the ledger signed that is
        consistent with the checkpoint held."""
        root = self.trust.root
        entry = self.ledger.GetEntries(self.pb.GetEntriesRequest(start=index, end=index + 1, with_bodies=True), timeout=CALL_TIMEOUT).entries[0]
        header = json.loads(entry.header)
        if entry.body != envelope or cv.sha256(entry.salt + entry.body) != bytes.fromhex(header["body_digest"]):
            raise SystemExit(f"entry {index} is not the report sent")
        if header["kind"] != "report":
            raise SystemExit(f"entry {index} is a {header['kind']}")
        proof_index, hashes, note = cv.parse_tlog_proof(proof)
        cp = cv.verify_checkpoint(note, root, "report inclusion")
        if proof_index != index or not cv.verify_inclusion(index, cp.size, cv.leaf_hash(entry.header), hashes, cp.root_hash):
            raise SystemExit(f"the report's inclusion proof does not verify (entry {index})")
        held = self.trust.checkpoint
        consistency = []
        if held.size < cp.size:
            consistency = list(self.ledger.GetConsistencyProof(self.pb.GetConsistencyProofRequest(from_size=held.size, to_size=cp.size), timeout=CALL_TIMEOUT).hashes)
        if not cv.verify_consistency(held.size, cp.size, held.root_hash, cp.root_hash, consistency):
            raise SystemExit("the report's checkpoint is not consistent with the one held")


# --- The refusals: tampered answers ------------------------------------------


def flip_b64(text):
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def tamper_envelope_sigs(data):
    env = json.loads(data)
    for s in env["signatures"]:
        s["sig"] = flip_b64(s["sig"])
    return json.dumps(env, separators=(",", ":")).encode()


def tamper_note_line(text, prefix):
    """Flips the last signature byte of the first note signature line whose
    name starts with `prefix`."""
    lines = text.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith("\u2014 ".encode() + prefix.encode()):
            head, _, b64 = line.decode().rpartition(" ")
            lines[i] = f"{head} {flip_b64(b64)}".encode()
            return b"\n".join(lines)
    raise SystemExit(f"no signature line by {prefix!r}")


def refusals(client, captured):
    """Each tampered copy of the granted answer must be refused at the step
    named; returns {case: the refusal}."""
    trust, device, nonce, answer, clock = captured
    root = trust.root
    ledger_name = root.role("ledger")["keys"][0]["note_name"]
    witness_name = root.role("witness")["keys"][0]["note_name"] if root.role("witness")["keys"] else None

    def copy():
        bad = type(answer)()
        bad.CopyFrom(answer)
        return bad

    cases = []
    bad = copy()
    bad.decision.body = tamper_envelope_sigs(answer.decision.body)
    cases.append(("a tampered decision signature", "entry", bad, nonce, clock))
    bad = copy()
    head, sep, note = answer.inclusion.text.partition(b"\n\n")
    lines = head.split(b"\n")
    hash_line = next(i for i, l in enumerate(lines) if i > 0 and not l.startswith(b"index ") and not l.startswith(b"extra "))
    lines[hash_line] = flip_b64(lines[hash_line].decode()).encode()
    bad.inclusion.text = b"\n".join(lines) + sep + note
    cases.append(("a tampered inclusion proof", "inclusion", bad, nonce, clock))
    bad = copy()
    bad.inclusion.text = tamper_note_line(answer.inclusion.text, ledger_name + " ")
    cases.append(("a tampered checkpoint signature", "inclusion", bad, nonce, clock))
    if witness_name:
        bad = copy()
        bad.inclusion.text = tamper_note_line(answer.inclusion.text, witness_name + " ")
        cases.append(("a tampered witness cosignature", "witnesses", bad, nonce, clock))
    bad = copy()
    bad.freshness = tamper_envelope_sigs(answer.freshness)
    cases.append(("a tampered freshness signature", "freshness", bad, nonce, clock))
    cases.append(("an answer to another nonce (a replay)", "freshness", copy(), os.urandom(32).hex(), clock))
    bad = copy()
    bad.release_manifest = tamper_envelope_sigs(answer.release_manifest)
    cases.append(("a tampered release manifest signature", "grant", bad, nonce, clock))
    _, decision = cv.verify_envelope(answer.decision.body, cv.DECISION_TYPE, root.publics("decision"), 1, "decision")
    cases.append(("an expired grant", "grant", copy(), nonce, cv.parse_time(decision["expires_at"]) + 1))
    if answer.consistency:
        bad = copy()
        bad.consistency[0] = bytes([answer.consistency[0][0] ^ 1]) + answer.consistency[0][1:]
        cases.append(("a tampered consistency proof", "consistency", bad, nonce, clock))
    chain = client.root_chain()
    out = {}
    for name, step, bad, n, c in cases:
        try:
            cv.verify_answer(trust, device, n, bad, chain, c)
        except cv.Refused as e:
            if e.step != step:
                raise SystemExit(f"{name}: refused at {e.step!r}, expected {step!r}: {e}")
            out[name] = str(e)
            continue
        raise SystemExit(f"{name} was accepted")
    # The decision's own signature, checked alone (a tampered one cannot reach
    # step 9 through the salted body digest of step 4).
    try:
        cv.verify_envelope(tamper_envelope_sigs(answer.decision.body), cv.DECISION_TYPE, root.publics("decision"), root.threshold("decision"), "decision")
        raise SystemExit("a decision with a tampered signature verified")
    except cv.Refused as e:
        out["a decision envelope with a tampered signature"] = str(e)
    # And the untampered answer still verifies.
    cv.verify_answer(trust, device, nonce, answer, chain, clock)
    return out


def run(args):
    client = Client(args)
    first = client.first_checkpoint()
    granted, captured = client.check()
    if granted.verdict != "granted":
        raise SystemExit(f"expected a grant, the answer is {granted.verdict}: {json.dumps(granted.decision)}")
    path = client.download(granted)
    report_index, report = client.report(granted)
    client.device.installed = report["to_version"]
    try:
        again, _ = client.check()
    except cv.Refused as e:
        raise SystemExit(f"the check-in after the report (entry {report_index}, grant {granted.index}) was refused: {e}")
    result = {
        "deployment": client.deployment,
        "first_checkpoint_size": first.size,
        "grant_index": granted.index,
        "release": granted.release_digest.hex(),
        "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "consistency_hashes": len(captured[3].consistency),
        "report_index": report_index,
        "reported_version": report["to_version"],
        "second_checkin": again.verdict,
        "refused": refusals(client, captured),
    }
    print(json.dumps(result, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("--state", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--state", type=Path, required=True)
    r.add_argument("--bundle", type=Path, required=True)
    r.add_argument("--product", required=True)
    r.add_argument("--installed", required=True)
    r.add_argument("--server-name", help="the name to check the server's certificate against, if not the address's host")
    r.add_argument("--allow-development", action="store_true")
    r.add_argument("--proto", type=Path, default=WORKSPACE / "proto" / "proto")
    args = parser.parse_args()
    if args.command == "keygen":
        print(keygen(args.state))
    else:
        run(args)


if __name__ == "__main__":
    main()
