#!/usr/bin/env python3
"""The real desktop app under Xvfb on a private session bus, checked from the bus side.

- A StatusNotifierWatcher (Debian ships none) records the tray item's registration; its menu
  is read over dbusmenu (`GetLayout`) and clicked (`Event`), as a desktop shell would.
- `dunst` is the notification server; `dbus-monitor` shows what reached
  org.freedesktop.Notifications (the app's own `show()` returns Ok even with no server).
- A real photo dropped into the watched folder; the menu's live text, the notification, a
  click on it (`dunstctl action`), a screenshot of the window, and Quit → clean exit.

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

APP = os.path.abspath(sys.argv[1])
ARTIFACTS = os.path.abspath(sys.argv[2])
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
PHOTO = os.path.join(REPO, "../shared/data/real/02_plantcv-docs__original_multi_image.jpg")
WATCHER = "org.kde.StatusNotifierWatcher"
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


class Menu:
    def __init__(self, bus, dest, path):
        self.bus, self.dest, self.path = bus, dest, path

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    port = free_port()
    env = dict(os.environ)
    env.update({
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local/share"),
        "DEMETER_WATCH": photos,
        "DEMETER_DATA": data,
        "DEMETER_LISTEN": f"127.0.0.1:{port}",
        "DEMETER_WORKERS": "2",
        "DEMETER_ADMIN_TOKEN": "dmt_" + "d" * 64,
        "DEMETER_STABILITY_WINDOW_MS": "500",
        "DEMETER_LOG": "info,ort=warn,demeter_server=debug",
        # Software rendering in Xvfb; the web process sandbox cannot run as root in a container.
        "WEBKIT_DISABLE_COMPOSITING_MODE": "1",
        "WEBKIT_DISABLE_DMABUF_RENDERER": "1",
        "LIBGL_ALWAYS_SOFTWARE": "1",
    })
    if os.geteuid() == 0:
        env["WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS"] = "1"
    app_log_path = os.path.join(ARTIFACTS, "app.log")
    app_log = open(app_log_path, "w")
    log("starting", APP)
    app = subprocess.Popen([APP], env=env, stdout=app_log, stderr=subprocess.STDOUT)
    read_log = lambda: open(app_log_path, encoding="utf-8", errors="replace").read()
    try:
        try:
            await asyncio.wait_for(watcher.registered.wait(), 60)
        except asyncio.TimeoutError:
            fail("the tray item never registered with the StatusNotifierWatcher\n" + read_log()[-3000:])
        sender, service = watcher.items[0]
        item_path = service if service.startswith("/") else "/StatusNotifierItem"
        item_dest = sender if service.startswith("/") else service
        log("tray item registered:", sender, service)
        menu_path = (await call(bus, item_dest, item_path, "org.freedesktop.DBus.Properties", "Get", "ss", ("org.kde.StatusNotifierItem", "Menu")))[0].value
        menu = Menu(bus, item_dest, menu_path)

        status = await menu.wait_for_status(r"^Idle — waiting for photos$")
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
        log("live status while paused:", status)
        if "Resume processing" not in await menu.labels():
            fail("the pause item should read Resume processing while paused")
        await menu.click("Resume processing")
        status = await menu.wait_for_status(r"^Idle — last batch: Processed 1 photo — \d+ plants counted$", 120)
        log("live status after the batch:", status)
        plants = re.search(r"(\d+) plants", status).group(1)

        notify = wait_until(
            "a Notify call on the bus",
            lambda: re.search(r'string "Photos processed"\s+string "(Processed 1 photo — \d+ plants counted)"', open(monitor_log, encoding="utf-8").read()),
            30,
        )
        log("notification on the bus:", notify.group(0).replace("\n", " "))
        if notify.group(1) != f"Processed 1 photo — {plants} plants counted":
            fail(f"notification body {notify.group(1)!r} does not match the tray's count {plants}")
        if open(monitor_log, encoding="utf-8").read().count("member=Notify") != 1:
            fail("expected exactly one notification for a one-photo batch")

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

        await menu.click("Quit Demeter")
        try:
            code = app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("the app did not exit within 30 s of Quit")
        if code != 0:
            fail(f"the app exited with {code}")
        out = read_log()
        for line in ("quit requested", "engine stopped", "demeter-desktop exited"):
            if line not in out:
                fail(f"log lacks {line!r}")
        log("clean exit after Quit; all desktop checks passed")
    finally:
        if app.poll() is None:
            app.kill()
        monitor.terminate()
        dunst.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
