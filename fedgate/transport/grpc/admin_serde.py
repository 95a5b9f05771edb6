"""Enrolment keys, users and logins to protobuf and back (the Operator service's admin
calls); paired ``x_to_proto`` / ``x_from_proto`` functions, like `serde`."""

from __future__ import annotations

from fedgate.core.accounts import LoginResult, Principal, Role, UserView
from fedgate.core.enrolment import IssuedKey, KeyState, KeyView
from fedgate.transport.grpc.proto import fedgate_pb2 as pb


def key_to_proto(key: KeyView) -> pb.EnrolmentKey:
    message = pb.EnrolmentKey(
        key_id=key.key_id,
        name=key.name,
        max_clients=key.max_clients,
        max_num_examples=key.max_num_examples,
        created_at=key.created_at,
        state=key.state.value,
        clients=key.clients,
    )
    if key.expires_at is not None:
        message.expires_at = key.expires_at
    if key.revoked_at is not None:
        message.revoked_at = key.revoked_at
    return message


def key_from_proto(message: pb.EnrolmentKey) -> KeyView:
    return KeyView(
        key_id=message.key_id,
        name=message.name,
        max_clients=message.max_clients,
        max_num_examples=message.max_num_examples,
        created_at=message.created_at,
        expires_at=message.expires_at if message.HasField("expires_at") else None,
        revoked_at=message.revoked_at if message.HasField("revoked_at") else None,
        state=KeyState(message.state),
        clients=message.clients,
    )


def issued_key_to_proto(issued: IssuedKey) -> pb.CreatedKey:
    return pb.CreatedKey(key=key_to_proto(issued.key), secret=issued.secret)


def issued_key_from_proto(message: pb.CreatedKey) -> IssuedKey:
    return IssuedKey(key_from_proto(message.key), message.secret)


def user_to_proto(user: UserView) -> pb.User:
    return pb.User(name=user.name, role=user.role.value, created_at=user.created_at)


def user_from_proto(message: pb.User) -> UserView:
    return UserView(message.name, Role(message.role), message.created_at)


def login_to_proto(result: LoginResult) -> pb.LoginReply:
    return pb.LoginReply(
        token=result.token,
        name=result.principal.name,
        role=result.principal.role.value,
        expires_in_s=result.expires_in_s,
    )


def login_from_proto(message: pb.LoginReply) -> LoginResult:
    principal = Principal(message.name, Role(message.role))
    return LoginResult(message.token, principal, message.expires_in_s)
