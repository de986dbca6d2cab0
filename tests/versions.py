"""What the running Python's asyncio has, for tests that follow the running version.

3.14 deprecates the policy system (its public names warn) and 3.16 removes it; the suite reaches
the policies through the names that do not warn, so a warning in a test run is ferroloop's.
"""

from __future__ import annotations

import sys
from asyncio import events, unix_events

POLICIES_DEPRECATED = sys.version_info >= (3, 14)
# 3.15 passes a contextvars context to the transports it makes; protocol callbacks run in it.
TRANSPORT_CONTEXT = sys.version_info >= (3, 15)

if POLICIES_DEPRECATED:
    get_policy = events._get_event_loop_policy
    set_policy = events._set_event_loop_policy
    DefaultPolicy = unix_events._DefaultEventLoopPolicy
    AbstractPolicy = events._AbstractEventLoopPolicy
else:
    get_policy = events.get_event_loop_policy
    set_policy = events.set_event_loop_policy
    DefaultPolicy = unix_events.DefaultEventLoopPolicy
    AbstractPolicy = events.AbstractEventLoopPolicy
