#!/usr/bin/env python3
"""Where the daemon's time goes beyond `demeter process`: one run over ROUNDS copies of every
real photo (distinct bytes, as `demeter-bench pipeline` makes them), queued first with
processing paused, then processed. Prints the ingest's cost, then the processing phase's wall
time, photos per minute, CPU, minor page faults, and per thread kind its CPU and voluntary and
involuntary context switches (wake-ups of other threads preempt the workers).

    scripts/profile-daemon.py [DEMETER_BIN] [WORKERS]     (default target/release/demeter, 4)

Compare with `/usr/bin/time -v demeter process --workers 4 --device cpu <the same folder>`
(the folder is kept in $TMPDIR/demeter-profile-photos). With PERF="perf record -F 999 -o FILE"
the processing phase is recorded too. Needs DEMETER_ORT_LIB (or the library where `make ort`
puts it). Not part of `make bench`: a tool for looking, its numbers are for one run.
"""
import datetime, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.environ.get("DEMETER_REAL_PHOTOS", os.path.join(REPO, "..", "shared", "data", "real"))
ROUNDS = int(os.environ.get("ROUNDS", "40"))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target", "release", "demeter")
WORKERS = sys.argv[2] if len(sys.argv) > 2 else "4"
TOKEN = "profile-admin-token-0123456789abcdef"

src = os.path.join(tempfile.gettempdir(), "demeter-profile-photos")
if not os.path.isdir(src):
    os.makedirs(src)
    for r in range(ROUNDS):
        for im in json.load(open(os.path.join(REAL, "manifest.json")))["images"]:
            data = open(os.path.join(REAL, im["file"]), "rb").read() + f"demeter-profile {r}".encode()
            open(os.path.join(src, f"r{r:02}-{os.path.basename(im['file'])}"), "wb").write(data)
root = tempfile.mkdtemp()
os.makedirs(os.path.join(root, "photos"))
open(os.path.join(root, "empty.toml"), "w").close()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = dict(os.environ, DEMETER_CONFIG=os.path.join(root, "empty.toml"), DEMETER_WORKERS=WORKERS,
           DEMETER_STABILITY_WINDOW_MS="50", DEMETER_LOG="warn", DEMETER_ADMIN_TOKEN=TOKEN)
daemon = subprocess.Popen([BIN, "run", "--watch", os.path.join(root, "photos"), "--data", os.path.join(root, "data"),
                           "--listen", f"127.0.0.1:{port}"], env=env,
                          stdout=open(os.path.join(root, "log"), "w"), stderr=subprocess.STDOUT)


def call(path, method="GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": "Bearer " + TOKEN})
    return json.load(urllib.request.urlopen(req, timeout=10))


def stat():
    f = open(f"/proc/{daemon.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), int(f[7])  # CPU s, minor faults


def threads():
    out = {}
    for t in os.listdir(f"/proc/{daemon.pid}/task"):
        try:
            name = open(f"/proc/{daemon.pid}/task/{t}/comm").read().strip().rstrip("0123456789")
            status = dict(l.split(":\t") for l in open(f"/proc/{daemon.pid}/task/{t}/status").read().splitlines() if ":\t" in l)
            f = open(f"/proc/{daemon.pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        a = out.setdefault(name, [0, 0, 0.0])
        a[0] += int(status["voluntary_ctxt_switches"]); a[1] += int(status["nonvoluntary_ctxt_switches"])
        a[2] += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def jobs_done(count):
    sessions = call("/api/v1/sessions")["sessions"]
    return sum(x["summary"][count] if count else x["summary"]["completed"] + x["summary"]["failed"] for x in sessions)


try:
    while True:
        try:
            call("/health"); break
        except OSError:
            time.sleep(0.01)
    call("/api/v1/queue/pause", "POST")
    (c0, _), t0 = stat(), time.time()
    for f in os.listdir(src):
        os.link(os.path.join(src, f), os.path.join(root, "photos", f))
    n = len(os.listdir(src))
    while jobs_done("total_jobs") < n:
        time.sleep(0.1)
    (c1, f1), t1 = stat(), time.time()
    print(f"ingest of {n} photos: {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU")
    before = threads()
    perf = None
    if os.environ.get("PERF"):
        perf = subprocess.Popen(os.environ["PERF"].split() + ["-p", str(daemon.pid)], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
    call("/api/v1/queue/resume", "POST")
    t2 = time.time()
    while jobs_done(None) < n:
        time.sleep(0.1)
    (c3, f3), t3 = stat(), time.time()
    if perf:
        perf.send_signal(2); perf.wait()
    print(f"processing: {t3 - t2:.2f} s wall, {n / (t3 - t2) * 60:.0f} photos/min, {c3 - c1:.2f} s CPU, "
          f"{f3 - f1} minor page faults")
    after = threads()
    for k in sorted(after):
        a, b = after[k], before.get(k, [0, 0, 0.0])
        if a[2] - b[2] >= 0.01 or a[0] - b[0] >= 100:
            print(f"  {k:20s} CPU {a[2] - b[2]:6.2f} s  voluntary {a[0] - b[0]:7d}  involuntary {a[1] - b[1]:7d}")
finally:
    daemon.send_signal(2); daemon.wait()
    shutil.rmtree(root)
