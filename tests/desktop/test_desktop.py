#!/usr/bin/env python3
"""The real desktop app under Xvfb on a private session bus, checked from the bus side.

- A StatusNotifierWatcher (Debian ships none) records the tray item's registration; its menu
  is read over dbusmenu (`GetLayout`) and clicked (`Event`), as a desktop shell would.
- `dunst` is the notification server; `dbus-monitor` shows what reached
  org.freedesktop.Notifications (the app's own `show()` returns Ok even with no server).
- A real photo dropped into the watched folder; the menu's live text, the notification, a
  click on it (`dunstctl action`), a screenshot of the window; closing the window keeps the
  app in the tray; two batches finishing together give one notification; Quit → clean exit.
- A first run (no config, no DEMETER_WATCH): the settings window asks for the photo folder.

Run through run.sh (dbus-run-session + xvfb-run). Exits non-zero on the first failed check.
"""
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from dbus_next import Message, MessageType, Variant
from dbus_next.aio import MessageBus
from Xlib import X, display as xdisplay, protocol as xprotocol

APP = os.path.abspath(sys.argv[1])
ARTIFACTS = os.path.abspath(sys.argv[2])
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
REAL = os.path.join(REPO, "../shared/data/real")
PHOTO = os.path.join(REAL, "02_plantcv-docs__original_multi_image.jpg")
WATCHER = "org.kde.StatusNotifierWatcher"
# The app waits this long for other batches before notifying (notifications::COALESCE).
COALESCE_S = 2
MENU_ITEMS = [
    "Open Demeter",
    "Pause processing",
    "Open photo folder",
    "Open status page in browser",
    "Show LAN link (QR code for phones)",
    "Settings…",
    "Quit Demeter",
]


def log(*a):
    print("[desktop-test]", *a, flush=True)


def fail(msg):
    log("FAILED:", msg)
    raise SystemExit(1)


class Watcher:
    """A minimal org.kde.StatusNotifierWatcher: records who registers which item."""

    def __init__(self, bus):
        self.bus = bus
        self.items = []  # (unique bus name, service argument)
        self.registered = asyncio.Event()

    def handle(self, msg):
        if msg.message_type != MessageType.METHOD_CALL or msg.path != "/StatusNotifierWatcher":
            return None
        if msg.interface == WATCHER and msg.member == "RegisterStatusNotifierItem":
            self.items.append((msg.sender, msg.body[0]))
            self.registered.set()
            self.bus.send(Message.new_signal("/StatusNotifierWatcher", WATCHER, "StatusNotifierItemRegistered", "s", [msg.body[0]]))
            return Message.new_method_return(msg)
        if msg.interface == WATCHER and msg.member == "RegisterStatusNotifierHost":
            return Message.new_method_return(msg)
        props = {
            "RegisteredStatusNotifierItems": Variant("as", [s for _, s in self.items]),
            "IsStatusNotifierHostRegistered": Variant("b", True),
            "ProtocolVersion": Variant("i", 0),
        }
        if msg.interface == "org.freedesktop.DBus.Properties" and msg.member == "Get" and msg.body[1] in props:
            return Message.new_method_return(msg, "v", [props[msg.body[1]]])
        if msg.interface == "org.freedesktop.DBus.Properties" and msg.member == "GetAll":
            return Message.new_method_return(msg, "a{sv}", [props])
        if msg.interface == "org.freedesktop.DBus.Introspectable":
            xml = (
                '<node><interface name="org.kde.StatusNotifierWatcher">'
                '<method name="RegisterStatusNotifierItem"><arg type="s" direction="in"/></method>'
                '<method name="RegisterStatusNotifierHost"><arg type="s" direction="in"/></method>'
                '<property name="RegisteredStatusNotifierItems" type="as" access="read"/>'
                '<property name="IsStatusNotifierHostRegistered" type="b" access="read"/>'
                '<property name="ProtocolVersion" type="i" access="read"/>'
                '<signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>'
                "</interface></node>"
            )
            return Message.new_method_return(msg, "s", [xml])
        return None


async def call(bus, dest, path, iface, member, sig="", body=()):
    reply = await bus.call(Message(destination=dest, path=path, interface=iface, member=member, signature=sig, body=list(body)))
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name} {reply.body}")
    return reply.body


def flatten(node):
    """dbusmenu layout (id, props, children) → [(id, label, enabled)] in menu order."""
    ident, props, children = node
    out = []
    if ident != 0:
        label = props.get("label").value if "label" in props else None
        kind = props.get("type").value if "type" in props else "standard"
        enabled = props["enabled"].value if "enabled" in props else True
        if kind != "separator":
            out.append((ident, label, enabled))
    for child in children:
        out.extend(flatten(child.value))
    return out


def pixels(png):
    """Decoded RGBA pixels of a PNG (ImageMagick), to compare icons whatever their encoding."""
    return subprocess.run(["convert", png, "-resize", "64x64!", "rgba:-"], check=True, capture_output=True).stdout


TRAY_ICONS = {state: pixels(os.path.join(REPO, "src-tauri/icons", f"tray-{state}.png")) for state in ("idle", "busy", "failed")}


class Menu:
    def __init__(self, bus, dest, path, item_path=None):
        self.bus, self.dest, self.path, self.item_path = bus, dest, path, item_path

    async def item_property(self, name):
        reply = await call(self.bus, self.dest, self.item_path, "org.freedesktop.DBus.Properties", "Get", "ss", ("org.kde.StatusNotifierItem", name))
        return reply[0].value

    async def icon_state(self):
        """Which of the three tray icons the item shows now (read from the file it exports)."""
        name = await self.item_property("IconName")
        path = name if name.startswith("/") else os.path.join(await self.item_property("IconThemePath"), name + ".png")
        shown = pixels(path)
        for state, px in TRAY_ICONS.items():
            if px == shown:
                return state
        return f"unknown icon {path}"

    async def wait_for_icon(self, state, timeout=10):
        deadline = time.monotonic() + timeout
        while (seen := await self.icon_state()) != state:
            if time.monotonic() > deadline:
                fail(f"tray icon is {seen!r}, expected {state!r}")
            await asyncio.sleep(0.2)

    async def items(self):
        _, layout = await call(self.bus, self.dest, self.path, "com.canonical.dbusmenu", "GetLayout", "iias", (0, -1, []))
        return [(i, (label or "").replace("_", ""), en) for i, label, en in flatten(layout)]

    async def labels(self):
        return [label for _, label, _ in await self.items()]

    async def click(self, label):
        for ident, text, _ in await self.items():
            if text == label:
                await call(self.bus, self.dest, self.path, "com.canonical.dbusmenu", "Event", "isvu", (ident, "clicked", Variant("s", ""), 0))
                return
        fail(f"no menu item {label!r}")

    async def wait_for_status(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            labels = await self.labels()
            seen = labels[0] if labels else None
            if seen and re.search(pattern, seen):
                return seen
            await asyncio.sleep(0.2)
        fail(f"tray status never matched {pattern!r} (last: {seen!r})")


def wait_until(what, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    fail(f"timed out waiting for {what}")


def x_windows(title):
    """Top-level X windows whose WM_NAME is `title`, with their map state."""
    d = xdisplay.Display()
    found = []
    net_wm_name, utf8 = d.intern_atom("_NET_WM_NAME"), d.intern_atom("UTF8_STRING")

    def name(w):
        prop = w.get_full_property(net_wm_name, utf8)
        if prop is not None:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return w.get_wm_name()

    def walk(w):
        try:
            # Top-level client windows only: those that speak WM_PROTOCOLS.
            if name(w) == title and w.get_wm_protocols():
                found.append((w.id, w.get_attributes().map_state == X.IsViewable))
            for c in w.query_tree().children:
                walk(c)
        except Exception:
            pass

    walk(d.screen().root)
    d.close()
    return found


def close_window(title):
    """Asks the window to close as a window manager would (WM_DELETE_WINDOW)."""
    d = xdisplay.Display()
    ids = [wid for wid, shown in x_windows(title) if shown]
    if not ids:
        fail(f"no visible window {title!r} to close")
    w = d.create_resource_object("window", ids[0])
    protocols, delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
    w.send_event(xprotocol.event.ClientMessage(window=w, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0])))
    d.sync()
    d.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(home):
    env = dict(os.environ)
    env.update({
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local/share"),
        "DEMETER_LOG": "info,ort=warn,demeter_server=debug",
        # A batch is announced when no photo has joined it for the session gap (default 30 s).
        "DEMETER_SESSION_GAP_SECS": "6",
        # Software rendering in Xvfb.
        "WEBKIT_DISABLE_COMPOSITING_MODE": "1",
        "WEBKIT_DISABLE_DMABUF_RENDERER": "1",
        "LIBGL_ALWAYS_SOFTWARE": "1",
    })
    for var in ("DEMETER_WATCH", "DEMETER_DATA", "DEMETER_LISTEN", "DEMETER_CONFIG"):
        env.pop(var, None)
    if os.geteuid() == 0:
        # WebKit's web-process sandbox cannot start as root in a container.
        env["WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS"] = "1"
    return env


async def tray_menu(bus, watcher, log_text):
    """Waits for the app's tray item and returns its dbusmenu."""
    try:
        await asyncio.wait_for(watcher.registered.wait(), 60)
    except asyncio.TimeoutError:
        fail("the tray item never registered with the StatusNotifierWatcher\n" + log_text()[-3000:])
    sender, service = watcher.items[-1]
    item_path = service if service.startswith("/") else "/StatusNotifierItem"
    item_dest = sender if service.startswith("/") else service
    log("tray item registered:", sender, service)
    menu_path = (await call(bus, item_dest, item_path, "org.freedesktop.DBus.Properties", "Get", "ss", ("org.kde.StatusNotifierItem", "Menu")))[0].value
    return Menu(bus, item_dest, menu_path, item_path)


async def quit_cleanly(menu, app, log_text):
    await menu.click("Quit Demeter")
    try:
        code = app.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the app did not exit within 30 s of Quit")
    if code != 0:
        fail(f"the app exited with {code}")
    for line in ("quit requested", "demeter-desktop exited"):
        if line not in log_text():
            fail(f"log lacks {line!r}")


async def first_run(bus, watcher):
    """No config file and no DEMETER_WATCH: the settings window asks for the photo folder."""
    home = tempfile.mkdtemp(prefix="demeter-first-run-")
    log_path = os.path.join(ARTIFACTS, "app-first-run.log")
    app = subprocess.Popen([APP], env=app_env(home), stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    log_text = lambda: open(log_path, encoding="utf-8", errors="replace").read()
    watcher.registered.clear()
    try:
        menu = await tray_menu(bus, watcher, log_text)
        await menu.wait_for_status(r"^Choose a photo folder in Settings$", 30)
        wait_until("the settings window", lambda: any(shown for _, shown in x_windows("Demeter — Settings")), 30)
        if x_windows("Demeter"):
            fail("no status window before a photo folder is chosen")
        await asyncio.sleep(3)  # let WebKit render the form
        shot = os.path.join(ARTIFACTS, "desktop-first-run.png")
        subprocess.run(["import", "-window", "root", shot], check=True)
        log("first run asks for the folder; screenshot:", shot)
        await quit_cleanly(menu, app, log_text)
    finally:
        if app.poll() is None:
            app.kill()
        shutil.rmtree(home, ignore_errors=True)


async def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="demeter-desktop-test-")
    photos, data, home = (os.path.join(tmp, d) for d in ("photos", "data", "home"))
    for d in (photos, data, home):
        os.makedirs(d)
    bus = await MessageBus().connect()
    watcher = Watcher(bus)
    bus.add_message_handler(watcher.handle)
    await call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName", "su", (WATCHER, 4))

    # dunst needs DISPLAY (bus activation would start it without one, and it would crash).
    dunst = subprocess.Popen(["dunst"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(ARTIFACTS, "dunst.log"), "w"))
    monitor_log = os.path.join(ARTIFACTS, "dbus-monitor.log")
    monitor = subprocess.Popen(
        ["dbus-monitor", "--session", "type='method_call',interface='org.freedesktop.Notifications',member='Notify'"],
        stdout=open(monitor_log, "w"), stderr=subprocess.STDOUT,
    )
    async def has_owner(name):
        return (await call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", (name,)))[0]
    deadline = time.monotonic() + 20
    while not await has_owner("org.freedesktop.Notifications"):
        if time.monotonic() > deadline:
            fail("dunst did not take org.freedesktop.Notifications")
        await asyncio.sleep(0.1)

    try:
        await first_run(bus, watcher)
        await main_scenario(bus, watcher, tmp, photos, data, home)
    finally:
        monitor.terminate()
        dunst.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


def notifications(monitor_log):
    """(title, body) of every Notify call seen on the bus so far."""
    text = open(monitor_log, encoding="utf-8").read()
    calls = text.split("member=Notify")[1:]
    out = []
    for c in calls:
        strings = re.findall(r'^\s+string "(.*)"$', c, re.M)
        # app_name, icon, summary, body
        if len(strings) >= 4:
            out.append((strings[2], strings[3]))
    return out


async def main_scenario(bus, watcher, tmp, photos, data, home):
    monitor_log = os.path.join(ARTIFACTS, "dbus-monitor.log")
    port = free_port()
    env = app_env(home)
    env.update({
        "DEMETER_WATCH": photos,
        "DEMETER_DATA": data,
        "DEMETER_LISTEN": f"127.0.0.1:{port}",
        "DEMETER_WORKERS": "2",
        "DEMETER_ADMIN_TOKEN": "dmt_" + "d" * 64,
        "DEMETER_STABILITY_WINDOW_MS": "500",
    })
    watcher.registered.clear()
    app_log_path = os.path.join(ARTIFACTS, "app.log")
    app_log = open(app_log_path, "w")
    log("starting", APP)
    app = subprocess.Popen([APP], env=env, stdout=app_log, stderr=subprocess.STDOUT)
    read_log = lambda: open(app_log_path, encoding="utf-8", errors="replace").read()
    try:
        menu = await tray_menu(bus, watcher, read_log)

        status = await menu.wait_for_status(r"^Idle — waiting for photos$")
        await menu.wait_for_icon("idle")
        labels = await menu.labels()
        log("menu:", labels)
        if labels[1:] != MENU_ITEMS:
            fail(f"menu items {labels[1:]} != {MENU_ITEMS}")

        # The window opened on the status page, signed in without a form.
        wait_until("the window to sign in", lambda: "signed in with a one-time link" in read_log(), 60)
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health"))
        log("health:", health)

        # Pause, drop a photo: the menu says it waits; resume: it is processed and announced.
        await menu.click("Pause processing")
        await menu.wait_for_status(r"^Idle|^Paused", 10)
        shutil.copy(PHOTO, os.path.join(photos, "bench-1.jpg"))
        status = await menu.wait_for_status(r"^Paused — 1 photo waiting$")
        await menu.wait_for_icon("busy")
        label = await menu.item_property("XAyatanaLabel")
        log("live status while paused:", status, "| label:", label, "| icon: busy")
        if label != "0/1":
            fail(f"tray label {label!r}, expected '0/1'")
        if "Resume processing" not in await menu.labels():
            fail("the pause item should read Resume processing while paused")
        await menu.click("Resume processing")
        status = await menu.wait_for_status(r"^Idle — last batch: Processed 1 photo — \d+ plants counted$", 120)
        log("live status after the batch:", status)
        plants = re.search(r"(\d+) plants", status).group(1)

        seen = wait_until("a Notify call on the bus", lambda: notifications(monitor_log), 30)
        log("notification on the bus:", seen)
        if seen != [("Photos processed", f"Processed 1 photo — {plants} plants counted")]:
            fail(f"expected one notification matching the tray's count {plants}, saw {seen}")

        # Click the notification as a person would: dunst invokes its default action.
        subprocess.run(["dunstctl", "action", "0"], check=False)
        wait_until("the click to open the session", lambda: "notification clicked" in read_log(), 20)
        session = re.search(r"notification clicked notification=\d+ session=Some\(SessionId\(([0-9a-f-]+)\)\)", read_log()).group(1)
        # The window shows it signed in: the page's own requests for that session succeed.
        wait_until(
            "the window to load the session signed in",
            lambda: re.search(rf"method=GET uri=/api/v1/\S*{session}\S* status=200 who=desktop", read_log()),
            30,
        )
        await asyncio.sleep(4)  # let WebKit render the session page
        shot = os.path.join(ARTIFACTS, "desktop-window.png")
        subprocess.run(["import", "-window", "root", shot], check=True)
        log("screenshot:", shot)

        # Closing the window keeps the app, its engine and its tray; Open brings the window back.
        close_window("Demeter")
        log("windows after close:", x_windows("Demeter"))
        wait_until("the window to hide", lambda: not any(shown for _, shown in x_windows("Demeter")), 10)
        if app.poll() is not None:
            fail("closing the window ended the app")
        await menu.wait_for_status(r"^Idle — last batch", 5)
        await menu.click("Open Demeter")
        wait_until("the window to come back", lambda: any(shown for _, shown in x_windows("Demeter")), 10)
        log("closing the window kept the app in the tray; Open brought it back")

        # Two batches (two subfolders) finishing together, one with a broken photo: one
        # notification for both, saying some failed.
        bench2, bench3 = os.path.join(photos, "bench-2"), os.path.join(photos, "bench-3")
        os.makedirs(bench2)
        os.makedirs(bench3)
        shutil.copy(os.path.join(REAL, "04_plantcv-docs__2016-05-25_1031.chamber129-camera-01.jpg"), bench2)
        shutil.copy(os.path.join(REAL, "08_plantcv-docs__tar_rgb.png"), bench3)
        with open(os.path.join(REAL, "05_pcv-workshop__3_wt_891.JPG"), "rb") as src:
            open(os.path.join(bench3, "broken.jpg"), "wb").write(src.read()[:20000])
        seen = wait_until("a second notification", lambda: notifications(monitor_log)[1:] or None, 60)
        await asyncio.sleep(COALESCE_S + 1)  # a third one would have come by now
        seen = notifications(monitor_log)[1:]
        log("notifications for two batches:", seen)
        if seen != [("2 batches processed — some failed", "Completed 2, failed 1 — click to review")]:
            fail(f"expected one coalesced notification, saw {seen}")
        await menu.wait_for_status(r"^Idle — last 2 batches: Completed 2, failed 1$", 10)
        await menu.wait_for_icon("failed")
        log("after a batch with a failure the tray icon shows it")

        # Photos not seen before (a copy of one would be skipped as a duplicate) trickling in,
        # each done before the next comes but within the session gap
        # (6 s here): one batch, one notification, when the gap after the last one has closed.
        before = len(notifications(monitor_log))
        bench5 = os.path.join(photos, "bench-5")
        os.makedirs(bench5)
        for i, name in enumerate(["01_pcv-tut-arabidopsis-tray__arabidopsis_tray.jpg", "03_pcv-workshop__2016-09-27_1025_ch129-pos01.jpg", "09_pcv-workshop__2016-09-27_1340_ch129-pos01.jpg"]):
            shutil.copy(os.path.join(REAL, name), os.path.join(bench5, f"t{i}.jpg"))
            await asyncio.sleep(2)
            if len(notifications(monitor_log)) != before:
                fail(f"a notification while photos still arrive: {notifications(monitor_log)[before:]}")
        seen = wait_until("the trickled batch's notification", lambda: notifications(monitor_log)[before:] or None, 60)
        await asyncio.sleep(COALESCE_S + 4)  # a second one would have come by now
        seen = notifications(monitor_log)[before:]
        log("notifications for the trickled batch:", seen)
        if len(seen) != 1 or not re.match(r"Processed 3 photos", seen[0][1]):
            fail(f"expected one notification for the 3 trickled photos, saw {seen}")

        # Two more photos after that batch's gap closed: a new batch, announced once on its
        # own (not as an update of the first). Into the folder's root: these are other trays,
        # and in bench-5 the first would rightly be announced as plants lost there.
        before = len(notifications(monitor_log))
        for i, name in enumerate(["06_apps-phenotyping__topviewpi_20170830.0955_quinoa_qq74.jpg", "10_easy-leaf-area__IMG_1980.jpg"]):
            shutil.copy(os.path.join(REAL, name), os.path.join(photos, f"late{i}.jpg"))
        wait_until("the second batch's notification", lambda: notifications(monitor_log)[before:] or None, 60)
        await asyncio.sleep(COALESCE_S + 4)
        seen = notifications(monitor_log)[before:]
        log("notifications for the batch after the gap:", seen)
        if len(seen) != 1 or not re.match(r"Processed 2 photos", seen[0][1]):
            fail(f"expected one notification for the 2 photos after the gap, saw {seen}")

        await quit_cleanly(menu, app, read_log)
        if "engine stopped" not in read_log():
            fail("log lacks 'engine stopped'")
        log("clean exit after Quit; all desktop checks passed")
    finally:
        if app.poll() is None:
            app.kill()


if __name__ == "__main__":
    asyncio.run(main())
