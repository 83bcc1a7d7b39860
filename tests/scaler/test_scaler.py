#!/usr/bin/python3
"""test_scaler.py: clawqd's KEDA external scaler, end to end.

Starts real clawqd processes (free ports, temp data dirs, stopped by PID at
the end, also on failure), puts tasks with clawqctl and calls the four
ExternalScaler RPCs through grpcio with stubs generated at test time from
proto/externalscaler.proto: over plaintext h2c, over TLS (a CA and a server
certificate made with the openssl CLI, SAN IP:127.0.0.1) and over TLS with
client certificates required. Prints one line per check and ends with
"N passed, N failed"; exits non-zero when anything failed. Bounded: the
whole run is cut at 55 s.

Run with the system interpreter (grpcio and grpc_tools live there):

    /usr/bin/python3 tests/scaler/test_scaler.py --clawqd build/broker/clawqd \
        --clawqctl build/client/clawqctl --proto proto/externalscaler.proto
"""
import argparse
import importlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import grpc

RUN_LIMIT_S = 55
SVC = "/externalscaler.ExternalScaler/"

passed = 0
failed = 0
procs = []  # (Popen, log path) of every clawqd started


def check(name, fn):
    global passed, failed
    t0 = time.monotonic()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report any failure, carry on
        failed += 1
        print("FAIL  %s: %s" % (name, e))
        tb = traceback.format_exc().strip().splitlines()
        for line in tb[-4:]:
            print("      " + line)
        return
    passed += 1
    print("ok    %s (%.0f ms)" % (name, (time.monotonic() - t0) * 1000))


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


# ---- setup ----------------------------------------------------------------


def gen_stubs(proto, out):
    d = os.path.dirname(os.path.abspath(proto))
    os.makedirs(out, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + d,
                        "--python_out=" + out, "--grpc_python_out=" + out,
                        os.path.abspath(proto)], stderr=subprocess.PIPE,
                       timeout=30)
    if r.returncode != 0:
        raise RuntimeError("grpc_tools.protoc failed: %d: %s" %
                           (r.returncode, r.stderr.decode(errors="replace")))
    sys.path.insert(0, out)
    pb = importlib.import_module("externalscaler_pb2")
    rpc = importlib.import_module("externalscaler_pb2_grpc")
    return pb, rpc


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=20)


def make_certs(d):
    """A CA, a server certificate for IP 127.0.0.1 and a client one."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=clawq test CA", "-keyout", "ca.key", "-out",
            "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
                "/CN=clawq test " + who, "-keyout", who + ".key", "-out",
                who + ".csr", cwd=d)
        openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", who + ".ext", "-out", who + ".pem", cwd=d)

    def rd(n):
        with open(os.path.join(d, n), "rb") as f:
            return f.read()

    return {k: rd(k) for k in ("ca.pem", "client.pem", "client.key")}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Broker:
    def __init__(self, a, root, name, extra):
        self.a, self.name, self.extra = a, name, extra
        self.dir = tempfile.mkdtemp(prefix=name + ".", dir=root)
        self.proc = None

    def start(self):
        for _ in range(5):
            self.port, self.scaler_port = free_port(), free_port()
            argv = [self.a.clawqd, "--data", os.path.join(self.dir, "data"),
                    "--listen", "127.0.0.1:%d" % self.port,
                    "--raft", "127.0.0.1:%d" % free_port(),
                    "--http", "127.0.0.1:%d" % free_port(),
                    "--scaler", "127.0.0.1:%d" % self.scaler_port,
                    "--log-level", "debug"] + self.extra
            self.log = os.path.join(self.dir, "clawqd.log")
            logf = open(self.log, "ab")
            logf.write(("==== exec %s ====\n" % " ".join(argv)).encode())
            logf.flush()
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL)
            logf.close()
            procs.append(self)
            if self.wait_ready():
                return
            self.stop()
            with open(self.log, "rb") as f:
                if b"in use" not in f.read():
                    break
        raise RuntimeError("%s did not start; log %s" % (self.name, self.log))

    def wait_ready(self):
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            r = subprocess.run([self.a.clawqctl, "--server", self.endpoint(),
                                "--timeout", "2000", "queues"],
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10)
            if r.returncode == 0 and self.scaler_port_open():
                return True
            time.sleep(0.05)
        return False

    def scaler_port_open(self):
        try:
            socket.create_connection(("127.0.0.1", self.scaler_port),
                                     0.5).close()
            return True
        except OSError:
            return False

    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def ctl(self, *args):
        r = subprocess.run([self.a.clawqctl, "--server", self.endpoint()] +
                           list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=15)
        if r.returncode != 0:
            raise RuntimeError("clawqctl %s: exit %d: %s" %
                               (" ".join(args), r.returncode,
                                r.stderr.decode(errors="replace")))
        return r.stdout.decode()

    def put(self, queue, n=1, *opts):
        for i in range(n):
            self.ctl("put", queue, *opts, "task-%d" % i)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stops by PID; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "killed after %ds" % timeout


# ---- the checks -------------------------------------------------------------


class Suite:
    def __init__(self, pb, rpc, b, channel_fn, label):
        self.pb, self.b, self.label = pb, b, label
        self.channel_fn = channel_fn
        self.ch = channel_fn()
        self.stub = rpc.ExternalScalerStub(self.ch)
        grpc.channel_ready_future(self.ch).result(timeout=10)

    def ref(self, **meta):
        return self.pb.ScaledObjectRef(name="so", namespace="apps",
                                       scalerMetadata=meta)

    def active(self, **meta):
        return self.stub.IsActive(self.ref(**meta), timeout=5).result

    def metric(self, **meta):
        r = self.stub.GetMetrics(self.pb.GetMetricsRequest(
            scaledObjectRef=self.ref(**meta), metricName="x"), timeout=5)
        eq(len(r.metricValues), 1, "metricValues")
        return r.metricValues[0]

    def spec(self, **meta):
        r = self.stub.GetMetricSpec(self.ref(**meta), timeout=5)
        eq(len(r.metricSpecs), 1, "metricSpecs")
        return r.metricSpecs[0]

    def code_of(self, fn):
        try:
            fn()
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    def run(self):
        L, b = self.label, self.b
        q = "jobs-" + L

        def unknown_inactive():
            eq(self.active(queue="never-put-" + L), False, "IsActive")
            m = self.metric(queue="never-put-" + L)
            eq((m.metricValue, m.metricValueFloat), (0, 0.0), "value")

        def active_after_put():
            eq(self.active(queue=q), False, "IsActive before put")
            b.put(q, 3)
            eq(self.active(queue=q), True, "IsActive after put")
            eq(self.active(queue=q, activationThreshold="3"), False,
               "IsActive with activationThreshold 3 (value 3)")
            eq(self.active(queue=q, activationThreshold="2.5"), True,
               "IsActive with activationThreshold 2.5")

        def metric_spec():
            s = self.spec(queue=q)
            eq(s.metricName, "clawq-%s-backlog" % q, "metricName")
            eq((s.targetSize, s.targetSizeFloat), (10, 10.0), "default target")
            s = self.spec(queue=q, targetPerReplica="4")
            eq((s.targetSize, s.targetSizeFloat), (4, 4.0), "target 4")
            s = self.spec(queue=q, targetPerReplica="2.5", mode="ready")
            eq(s.metricName, "clawq-%s-ready" % q, "metricName (ready)")
            eq(s.targetSizeFloat, 2.5, "targetSizeFloat 2.5")
            expect(s.targetSize in (2, 3), "targetSize for 2.5: %d" %
                   s.targetSize)
            s = self.spec(queue=q, mode="workers", targetPerReplica="7")
            eq((s.targetSize, s.targetSizeFloat), (1, 1.0), "workers target")
            s = self.spec(queue="Odd.Name_" + "x" * 100)
            expect(len(s.metricName) <= 63, "name too long: " + s.metricName)
            expect(all(c.islower() or c.isdigit() or c == "-"
                       for c in s.metricName), "not DNS-safe: " +
                   s.metricName)

        def modes():
            m = self.metric(queue=q)
            eq((m.metricValue, m.metricValueFloat), (3, 3.0), "backlog")
            eq(m.metricName, "clawq-%s-backlog" % q, "metricName")
            b.ctl("pull", q, "-n", "2", "--lease", "60000")  # 2 leased
            m = self.metric(queue=q)
            eq((m.metricValue, m.metricValueFloat), (3, 3.0),
               "backlog (1 ready + 2 leased)")
            m = self.metric(queue=q, mode="ready")
            eq((m.metricValue, m.metricValueFloat), (1, 1.0), "ready")
            b.put(q, 1, "--delay", "600000")
            m = self.metric(queue=q)
            eq(m.metricValueFloat, 3.0, "backlog ignores delayed")
            m = self.metric(queue=q, includeDelayed="true")
            eq(m.metricValueFloat, 4.0, "backlog includeDelayed")
            m = self.metric(queue=q, mode="ready", includeDelayed="true")
            eq(m.metricValueFloat, 2.0, "ready includeDelayed")
            # workers without reports: ceil(backlog / targetPerReplica)
            m = self.metric(queue=q, mode="workers", targetPerReplica="2")
            eq((m.metricValue, m.metricValueFloat), (2, 2.0),
               "workers ceil(3/2)")
            m = self.metric(queue=q, mode="workers")
            eq(m.metricValueFloat, 1.0, "workers ceil(3/10)")
            m = self.metric(queue=q, mode="workers", targetPerReplica="1",
                            includeDelayed="true")
            eq(m.metricValueFloat, 4.0, "workers ceil(4/1)")
            m = self.metric(queue="never-put-" + L, mode="workers")
            eq(m.metricValueFloat, 0.0, "workers, unknown queue")
            # workers with reports: capacity = the median reported (4);
            # saturated workers ask for one more than report.
            def reporters(inflight):
                ps = [subprocess.Popen([b.a.reporter, b.endpoint(), q,
                                        str(inflight), "4", "3"])
                      for _ in range(2)]
                time.sleep(0.6)
                return ps

            def stop(ps):
                for p in ps:
                    p.kill()
                    p.wait()

            ps = reporters(0)
            try:
                m = self.metric(queue=q, mode="workers", targetPerReplica="1")
                eq(m.metricValueFloat, 1.0, "workers ceil(3/4), 2 idle")
            finally:
                stop(ps)
            ps = reporters(4)
            try:
                m = self.metric(queue=q, mode="workers", targetPerReplica="1")
                eq(m.metricValueFloat, 3.0, "workers saturated: 2 + 1")
            finally:
                stop(ps)

        def age():
            qa = "age-" + L
            m = self.metric(queue=qa, mode="age")
            eq(m.metricValueFloat, 0.0, "age of an unknown queue")
            b.put(qa, 1)
            time.sleep(1.3)
            m = self.metric(queue=qa, mode="age")
            expect(1.0 <= m.metricValueFloat < 30, "age %r" %
                   m.metricValueFloat)
            expect(m.metricValue in (1, 2), "age int %r" % m.metricValue)
            eq(self.active(queue=qa, mode="age", activationThreshold="60"),
               False, "IsActive: age below activationThreshold")
            eq(self.active(queue=qa, mode="age"), True, "IsActive by age")

        def stream_push():
            qs = "stream-" + L
            got, errs = [], []
            call = self.stub.StreamIsActive(self.ref(queue=qs), timeout=20)

            def reader():
                try:
                    for r in call:
                        got.append((time.monotonic(), r.result))
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.CANCELLED:
                        errs.append(e)

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            time.sleep(0.5)
            eq(got, [], "messages on an idle queue")
            t0 = time.monotonic()
            b.put(qs, 1)
            while not got and time.monotonic() < t0 + 3:
                time.sleep(0.02)
            expect(got, "no message within 3 s of the put (errors %r)" % errs)
            eq(got[0][1], True, "streamed result")
            expect(got[0][0] - t0 < 2.0, "took %.2f s" % (got[0][0] - t0))
            print("      put -> true: %.0f ms (clawqctl put included)" %
                  ((got[0][0] - t0) * 1000))
            call.cancel()
            t.join(5)
            # Active already: `true` at once.
            call2 = self.stub.StreamIsActive(self.ref(queue=qs), timeout=5)
            first = next(iter(call2))
            eq(first.result, True, "first message on an active queue")
            call2.cancel()

        def unknown_method():
            for path in (SVC + "Nope", SVC + "StreamMetricSpec",
                         "/grpc.health.v1.Health/Check"):
                fn = self.ch.unary_unary(
                    path, request_serializer=lambda x: x,
                    response_deserializer=lambda x: x)
                eq(self.code_of(lambda: fn(b"", timeout=5)),
                   grpc.StatusCode.UNIMPLEMENTED, path)

        def bad_requests():
            C = grpc.StatusCode
            eq(self.code_of(lambda: self.active()), C.INVALID_ARGUMENT,
               "no queue")
            eq(self.code_of(lambda: self.metric(mode="ready")),
               C.INVALID_ARGUMENT, "GetMetrics without queue")
            eq(self.code_of(lambda: self.stub.GetMetrics(
                self.pb.GetMetricsRequest(metricName="x"), timeout=5)),
               C.INVALID_ARGUMENT, "GetMetrics without scaledObjectRef")
            eq(self.code_of(lambda: self.spec(queue="bad queue!")),
               C.INVALID_ARGUMENT, "invalid queue name")
            eq(self.code_of(lambda: self.spec(queue=q, mode="fastest")),
               C.INVALID_ARGUMENT, "unknown mode")
            eq(self.code_of(lambda: self.spec(queue=q,
                                              targetPerReplica="0")),
               C.INVALID_ARGUMENT, "targetPerReplica 0")
            eq(self.code_of(lambda: self.active(queue=q,
                                                includeDelayed="maybe")),
               C.INVALID_ARGUMENT, "includeDelayed maybe")
            eq(self.code_of(lambda: self.stub.StreamIsActive(
                self.ref(), timeout=5).next()), C.INVALID_ARGUMENT,
               "StreamIsActive without queue")
            raw = self.ch.unary_unary(SVC + "IsActive",
                                      request_serializer=lambda x: x,
                                      response_deserializer=lambda x: x)
            eq(self.code_of(lambda: raw(b"\xff\xff\xff", timeout=5)),
               C.INTERNAL, "undecodable ScaledObjectRef")
            eq(self.code_of(lambda: raw(b"\x0a" * 100 * 1024, timeout=5)),
               C.RESOURCE_EXHAUSTED, "a 100 KiB request")
            # queueFromEnv: KEDA resolves the value, keeps the key.
            eq(self.active(queueFromEnv=q), True, "queueFromEnv")

        def concurrent():
            futs = [self.stub.GetMetrics.future(self.pb.GetMetricsRequest(
                scaledObjectRef=self.ref(queue=q)), timeout=5)
                for _ in range(50)]
            for f in futs:
                eq(f.result().metricValues[0].metricValueFloat, 3.0, "value")

        for name, fn in [("unknown queue inactive", unknown_inactive),
                         ("active after put", active_after_put),
                         ("GetMetricSpec", metric_spec),
                         ("GetMetrics modes", modes),
                         ("age", age),
                         ("StreamIsActive push", stream_push),
                         ("unknown method UNIMPLEMENTED", unknown_method),
                         ("bad requests", bad_requests),
                         ("50 concurrent calls", concurrent)]:
            check("%s: %s" % (L, name), fn)


def raw_checks(b):
    """Byte-level abuse of the h2c port; the broker must keep answering."""
    port = b.scaler_port

    def send(data, read=True):
        s = socket.create_connection(("127.0.0.1", port), 3)
        s.settimeout(3)
        try:
            s.sendall(data)
            if read:
                try:
                    while s.recv(4096):
                        pass
                except (socket.timeout, ConnectionResetError):
                    pass
        finally:
            s.close()

    def garbage():
        send(b"\x00" * 1000)
        send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(4096))
        send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", read=False)
        eq(subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o",
                           "/dev/null", "-w", "%{http_code}", "-X", "POST",
                           "-H", "content-type: text/plain", "--data", "x",
                           "http://127.0.0.1:%d%sIsActive" % (port, SVC)],
                          stdout=subprocess.PIPE, timeout=10).stdout,
           b"415", "HTTP status for content-type text/plain")
        eq(subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o",
                           "/dev/null", "-w", "%{http_code}",
                           "http://127.0.0.1:%d/" % port],
                          stdout=subprocess.PIPE, timeout=10).stdout,
           b"405", "HTTP status for GET")
        expect(b.proc.poll() is None, "clawqd died")

    def conn_cap():
        socks, refused = [], 0
        try:
            for _ in range(300):
                socks.append(socket.create_connection(("127.0.0.1", port), 3))
            time.sleep(0.3)
            for s in socks[-40:]:  # past the cap of 256: closed at once
                s.settimeout(0.05)
                try:
                    if s.recv(64) == b"":
                        refused += 1
                except (socket.timeout, ConnectionResetError):
                    pass
        finally:
            for s in socks:
                s.close()
        expect(refused >= 30, "only %d of the last 40 were refused" % refused)
        time.sleep(0.3)
        eq(subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o",
                           "/dev/null", "-w", "%{http_code}",
                           "http://127.0.0.1:%d/" % port],
                          stdout=subprocess.PIPE, timeout=10).stdout,
           b"405", "served after the flood")

    def frame(ftype, flags, sid, payload):
        return (len(payload).to_bytes(3, "big") + bytes([ftype, flags]) +
                sid.to_bytes(4, "big") + payload)

    def hpack_literal(name, value):
        # Literal header field without indexing, new name, no Huffman.
        n, v = name.encode(), value.encode()
        return bytes([0, len(n)]) + n + bytes([len(v)]) + v

    def request(sid, meta):
        hdrs = b"".join(hpack_literal(k, v) for k, v in [
            (":method", "POST"), (":scheme", "http"),
            (":path", SVC + "IsActive"), (":authority", "x"),
            ("content-type", "application/grpc"), ("te", "trailers")])
        msg = b""
        for k, v in meta.items():
            e = b"\x0a" + bytes([len(k)]) + k.encode() + b"\x12" + \
                bytes([len(v)]) + v.encode()
            msg += b"\x1a" + bytes([len(e)]) + e
        body = b"\x00" + len(msg).to_bytes(4, "big") + msg
        return (frame(1, 4, sid, hdrs) + frame(0, 0, sid, body[:4]) +
                frame(0, 1, sid, body[4:]))

    def mutated():
        import random
        rnd = random.Random(1234)
        base = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
                request(1, {"queue": "fuzz"}) + request(3, {"queue": "f2"}))
        # The unmutated bytes get a real answer: HEADERS back on stream 1.
        def ended(buf):  # the streams a HEADERS frame with END_STREAM ended
            out, i = set(), 0
            while i + 9 <= len(buf):
                n = int.from_bytes(buf[i:i + 3], "big")
                if buf[i + 3] == 1 and buf[i + 4] & 1:
                    out.add(int.from_bytes(buf[i + 5:i + 9], "big"))
                i += 9 + n
            return out

        s = socket.create_connection(("127.0.0.1", port), 3)
        s.settimeout(3)
        s.sendall(base)
        got = b""
        try:
            while ended(got) != {1, 3}:
                d = s.recv(4096)
                if not d:
                    break
                got += d
        except socket.timeout:
            pass
        s.close()
        eq(ended(got), {1, 3}, "streams answered with trailers")
        for _ in range(300):
            data = bytearray(base)
            for _ in range(rnd.randint(1, 8)):
                data[rnd.randrange(24, len(data))] = rnd.randrange(256)
            s = socket.create_connection(("127.0.0.1", port), 3)
            s.settimeout(0.2)
            try:
                s.sendall(bytes(data))
                s.recv(65536)
            except (socket.timeout, ConnectionResetError, BrokenPipeError):
                pass
            s.close()
        expect(b.proc.poll() is None, "clawqd died")

    check("h2c: garbage, HTTP/1.1, wrong content-type", garbage)
    check("h2c: 300 mutated requests", mutated)
    check("h2c: connection cap", conn_cap)


def shutdown_check(pb, rpc, b, channel_fn, label):
    """SIGTERM: an open StreamIsActive ends with grpc-status 0, clawqd 0."""

    def fn():
        ch = channel_fn()
        stub = rpc.ExternalScalerStub(ch)
        call = stub.StreamIsActive(pb.ScaledObjectRef(
            scalerMetadata={"queue": "shutdown-" + label}), timeout=15)
        res = {}

        def reader():
            try:
                res["msgs"] = list(call)
                res["code"] = call.code()
            except grpc.RpcError as e:
                res["code"] = e.code()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = b.stop()
        t.join(10)
        eq(res.get("code"), grpc.StatusCode.OK, "stream status at shutdown")
        eq(rc, 0, "clawqd exit code")
        expect(time.monotonic() - t0 < 8, "shutdown took too long")
        ch.close()

    check("%s: shutdown ends streams cleanly" % label, fn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clawqd", required=True)
    ap.add_argument("--clawqctl", required=True)
    ap.add_argument("--reporter", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (logs) even when all passed")
    a = ap.parse_args()
    a.clawqd, a.clawqctl = os.path.abspath(a.clawqd), os.path.abspath(a.clawqctl)
    a.reporter = os.path.abspath(a.reporter)

    def on_alarm(signum, frame):
        raise TimeoutError("the run exceeded %d s" % RUN_LIMIT_S)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(RUN_LIMIT_S)
    root = tempfile.mkdtemp(prefix="clawq-scaler.")
    global failed
    try:
        pb, rpc = gen_stubs(a.proto, os.path.join(root, "stubs"))
        certs = make_certs(root)
        cdir = root

        plain = Broker(a, root, "h2c", [])
        tls = Broker(a, root, "tls",
                     ["--scaler-tls-cert", os.path.join(cdir, "server.pem"),
                      "--scaler-tls-key", os.path.join(cdir, "server.key")])
        mtls = Broker(a, root, "mtls",
                      ["--scaler-tls-cert", os.path.join(cdir, "server.pem"),
                       "--scaler-tls-key", os.path.join(cdir, "server.key"),
                       "--scaler-tls-ca", os.path.join(cdir, "ca.pem")])
        for br in (plain, tls, mtls):
            br.start()

        def plain_ch():
            return grpc.insecure_channel("127.0.0.1:%d" % plain.scaler_port)

        def tls_ch():
            return grpc.secure_channel(
                "127.0.0.1:%d" % tls.scaler_port,
                grpc.ssl_channel_credentials(root_certificates=certs["ca.pem"]))

        def mtls_ch(with_cert=True):
            cred = grpc.ssl_channel_credentials(
                root_certificates=certs["ca.pem"],
                private_key=certs["client.key"] if with_cert else None,
                certificate_chain=certs["client.pem"] if with_cert else None)
            return grpc.secure_channel("127.0.0.1:%d" % mtls.scaler_port, cred)

        Suite(pb, rpc, plain, plain_ch, "h2c").run()
        raw_checks(plain)
        Suite(pb, rpc, tls, tls_ch, "tls").run()

        def mtls_ok():
            ch = mtls_ch()
            stub = rpc.ExternalScalerStub(ch)
            r = stub.IsActive(pb.ScaledObjectRef(
                scalerMetadata={"queue": "m"}), timeout=5)
            eq(r.result, False, "IsActive over mTLS")
            ch.close()

        def mtls_refused():
            ch = mtls_ch(with_cert=False)
            stub = rpc.ExternalScalerStub(ch)
            try:
                stub.IsActive(pb.ScaledObjectRef(
                    scalerMetadata={"queue": "m"}), timeout=3)
            except grpc.RpcError as e:
                expect(e.code() in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED),
                       "code %s" % e.code())
            else:
                raise AssertionError("a client without a certificate "
                                     "was served")
            ch.close()
            expect(mtls.proc.poll() is None, "clawqd died")

        def plaintext_to_tls():
            ch = grpc.insecure_channel("127.0.0.1:%d" % tls.scaler_port)
            stub = rpc.ExternalScalerStub(ch)
            try:
                stub.IsActive(pb.ScaledObjectRef(
                    scalerMetadata={"queue": "m"}), timeout=3)
            except grpc.RpcError:
                pass
            else:
                raise AssertionError("h2c served on the TLS port")
            ch.close()
            url = "https://127.0.0.1:%d/" % tls.scaler_port
            ca = os.path.join(cdir, "ca.pem")
            r = subprocess.run(["curl", "-sS", "--cacert", ca, "--http1.1",
                                url], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=10)
            expect(r.returncode != 0, "ALPN http/1.1 was accepted")
            r = subprocess.run(["curl", "-sS", "--cacert", ca, "--http2",
                                "--tlsv1.2", "--tls-max", "1.2", "-o",
                                "/dev/null", "-w", "%{http_code}", url],
                               stdout=subprocess.PIPE, timeout=10)
            eq(r.stdout, b"405", "GET over TLS 1.2 with ALPN h2")
            r = subprocess.run(["curl", "-sS", "--cacert", ca, "--http2",
                                "--tls-max", "1.1", url],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=10)
            expect(r.returncode != 0, "TLS 1.1 was accepted")
            expect(tls.proc.poll() is None, "clawqd died")

        check("mtls: client with a certificate", mtls_ok)
        check("mtls: client without a certificate refused", mtls_refused)
        check("tls: h2c, http/1.1 ALPN, TLS 1.1 refused; TLS 1.2 served",
              plaintext_to_tls)

        shutdown_check(pb, rpc, plain, plain_ch, "h2c")
        shutdown_check(pb, rpc, tls, tls_ch, "tls")
        check("mtls: SIGTERM exits 0", lambda: eq(mtls.stop(), 0, "exit"))
    except Exception as e:  # noqa: BLE001
        failed += 1
        print("FAIL  setup/run: %s" % e)
        traceback.print_exc()
    finally:
        signal.alarm(0)
        for br in procs:
            br.stop(signal.SIGKILL, 5)
        if failed:
            for br in procs:
                try:
                    with open(br.log, "rb") as f:
                        tail = f.read()[-3000:].decode(errors="replace")
                    print("==== %s log (%s), tail ====\n%s" %
                          (br.name, br.log, tail))
                except OSError:
                    pass
            print("kept %s" % root)
        elif not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
