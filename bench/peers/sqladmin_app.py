"""SQLAdmin's peer of Gatehouse's users table (bench/run.py --peers), on uvicorn.

A ModelView over the users table of the database Gatehouse made, 50 rows a page, first page
sorted by lower(username) as Gatehouse sorts (the same index serves it), deleted users left
out. Login through SQLAdmin's AuthenticationBackend as its documentation shows it: the form
checks the argon2 hash Gatehouse stored, and each request checks only the signed session
cookie (no database read, where Gatehouse reads its session row: this favours SQLAdmin).

    DATABASE_PATH=/path/to/gatehouse.sqlite3 SECRET_KEY=… uvicorn sqladmin_app:app
"""
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy import Boolean, DateTime, Integer, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from starlette.applications import Starlette

engine = create_engine(f"sqlite:///{os.environ['DATABASE_PATH']}")
Session = sessionmaker(engine)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean)
    last_login_at = mapped_column(DateTime)
    created_at = mapped_column(DateTime)
    deleted_at = mapped_column(DateTime)


class UserAdmin(ModelView, model=User):
    column_list = [User.username, User.email, User.role, User.active, User.last_login_at, User.created_at]
    column_sortable_list = [User.username, User.email, User.role, User.active, User.last_login_at, User.created_at]
    column_searchable_list = [User.username, User.email]
    page_size = 50
    can_create = can_edit = can_delete = False

    def list_query(self, request):
        return select(User).where(User.deleted_at.is_(None))

    def sort_query(self, stmt, request):
        if request.query_params.get("sortBy"):
            return super().sort_query(stmt, request)
        return stmt.order_by(func.lower(User.username), User.id)


class AdminLogin(AuthenticationBackend):
    hasher = PasswordHasher()

    async def login(self, request) -> bool:
        form = await request.form()
        with Session() as session:
            user = session.scalars(select(User).where(
                func.lower(User.username) == str(form.get("username", "")).lower())).first()
        if user is None or not user.active or user.role != "Admin" or user.deleted_at is not None:
            return False
        try:
            self.hasher.verify(user.password_hash, str(form.get("password", "")))
        except (VerifyMismatchError, InvalidHashError):
            return False
        request.session["user_id"] = user.id
        return True

    async def logout(self, request) -> bool:
        request.session.clear()
        return True

    async def authenticate(self, request) -> bool:
        return "user_id" in request.session


app = Starlette(debug=False)
admin = Admin(app, engine, authentication_backend=AdminLogin(secret_key=os.environ["SECRET_KEY"]))
admin.add_view(UserAdmin)
