"""The user a /users/<id> address names, as the users pages find them: a live account, or 404."""
from quart import abort

from ..accounts import queries as accounts

GONE = "This user does not exist or was deleted."


def live_or_404(user):
    """`user` when it is a live account; 404 for none or a deleted one."""
    if user is None or user.deleted_at is not None:
        abort(404, GONE)
    return user


async def live_user_or_404(conn, user_id: int):
    return live_or_404(await accounts.get_user(conn, user_id))
