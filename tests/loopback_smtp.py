"""A real SMTP server on loopback (aiosmtpd), for tests that send mail: it records what it
receives, or answers as a test scripts it (4xx, 5xx, a dropped connection, a stall)."""
import asyncio
import email
import email.policy
import re
import threading
import time

from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://[^\s<>\"']+")


class LoopbackSMTP(Controller):
    """aiosmtpd's Controller on port 0: the system picks a free port, read back once bound."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Recorder:
    """Accepts and records every message, or answers as `script` says for the next ones:
    "4xx", "5xx", "drop" (hang up after the data, before answering), "stall" (until released)."""

    def __init__(self):
        self.received: list[email.message.Message] = []
        self.script: list[str] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        step = self.script.pop(0) if self.script else "accept"
        if step == "4xx":
            return "451 4.3.0 Try again later"
        if step == "5xx":
            return "550 5.1.1 No such mailbox"
        if step == "drop":
            server.transport.abort()
            return "250 never heard"
        if step == "stall":
            self.stalled.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
        with self.arrived:
            self.received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self.arrived.notify_all()
        return "250 2.0.0 Accepted"

    def ids(self) -> list[str]:
        return [m["Message-ID"] for m in self.received]

    def to(self, address: str) -> list[email.message.Message]:
        return [m for m in self.received if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 30) -> list[email.message.Message]:
        """The first `count` messages to `address`, once they have arrived (a message is sent
        when its transaction commits: the test waits for that, not for a fixed time)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.to(address)) < count:
                if not self.arrived.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    raise AssertionError(f"no message to {address} within {timeout} s; got {self.summary()}")
            return self.to(address)[:count]

    async def next_to(self, address: str, count: int = 1, timeout: float = 30) -> email.message.Message:
        """The `count`-th message to `address`, waited for without blocking the event loop."""
        return (await asyncio.to_thread(self.wait_for, address, count, timeout))[count - 1]

    def summary(self) -> list[tuple[str, str]]:
        return [(m["To"], m["Subject"]) for m in self.received]


def parts(message: email.message.Message) -> dict[str, str]:
    """The text/plain and text/html parts of a message, decoded."""
    return {part.get_content_type(): part.get_content() for part in message.walk() if not part.is_multipart()}


def links(message: email.message.Message) -> list[str]:
    """The http(s) links in the message's text part, in order."""
    return LINK.findall(parts(message)["text/plain"])


def start() -> tuple[LoopbackSMTP, Recorder]:
    recorder = Recorder()
    controller = LoopbackSMTP(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    recorder.port = controller.port
    return controller, recorder
