"""An application that takes a floating seat for every user who logs in, and gives it back at
logout (entitle.client.sessions: check-out, a background heartbeat, check-in).

    ENTITLE_OFREP_URL=http://entitle-webhook.entitle-system.svc:8016 python app.py

The token is the app's ServiceAccount token for entitle's audience (see README.md); entitle
answers for the tenant of the token's namespace, never for one named in the request.
"""

import os
from contextlib import ExitStack

from entitle.client.sessions import SessionCapExceeded, SessionClient

seats = SessionClient(os.environ["ENTITLE_OFREP_URL"], token=os.environ.get("ENTITLE_TOKEN"))


class App:
    """Logged-in sessions of the app: each holds its seat until logout."""

    def __init__(self) -> None:
        self.sessions: dict[str, ExitStack] = {}

    def login(self, user: str, tab: str = "main") -> None:
        stack = ExitStack()
        try:
            # The app's own name for the session: a retried login renews it, never takes two seats.
            seat = stack.enter_context(seats.seat(user, session=f"{user}/{tab}"))
        except SessionCapExceeded as full:
            print(f"{user}: no seat, {full.used} of {full.max} in use")
            return
        self.sessions[f"{user}/{tab}"] = stack
        print(f"{user} ({tab}): seated" + "".join(f" ({w})" for w in seat.warnings))

    def logout(self, user: str) -> None:
        for key in [k for k in self.sessions if k.startswith(f"{user}/")]:
            self.sessions.pop(key).close()          # checks the seat in
        print(f"{user}: logged out")


app = App()
for user in ("ann", "bob", "cid"):
    app.login(user)
app.login("ann", tab="second")     # ann's second session shares her seat (perUser)
app.login("dan")                   # all three seats are taken
app.logout("ann")
app.login("dan")
for user in ("bob", "cid", "dan"):
    app.logout(user)
