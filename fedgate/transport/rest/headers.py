"""The HTTP headers fedgate's REST adapter adds, shared by the routes and the client."""

from __future__ import annotations

MODEL_VERSION_HEADER = "X-Fedgate-Model-Version"
CODEC_HEADER = "X-Fedgate-Codec"
CLIENT_HEADER = "X-Fedgate-Client-Id"
REF_HEADER = "X-Fedgate-Model-Ref"
BASE_REF_HEADER = "X-Fedgate-Base-Ref"
# A task handed out with its model (`/clients/{id}/task-with-model`): the task's JSON
TASK_HEADER = "X-Fedgate-Task"
