"""The Flask-Security-Too + Flask-SQLAlchemy peer of Gatehouse's users table (bench/run.py
--peers), on one sync gunicorn worker.

Its models map the tables Gatehouse made, unchanged: the password is the argon2 hash Gatehouse
stored (verified as is: no HMAC pepper, the same argon2 parameters, so logging in rewrites
nothing), the one role is users.role, and fs_uniquifier (the session's user id) is
lower(username), which is unique and indexed. /users lists live users by lower(username),
50 a page, with Flask-SQLAlchemy's paginate (a count and a page), for Admins and Managers.

    DATABASE_PATH=/path/to/gatehouse.sqlite3 SECRET_KEY=… gunicorn -w 1 fst_app:app
"""
import os

from flask import Flask, render_template
from flask_security import RoleMixin, Security, SQLAlchemyUserDatastore, UserMixin, roles_accepted
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import column_property, relationship

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["SECRET_KEY"],
    SQLALCHEMY_DATABASE_URI=f"sqlite:///{os.environ['DATABASE_PATH']}",
    SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
    SECURITY_PASSWORD_SALT=os.environ["SECRET_KEY"],
    SECURITY_PASSWORD_SINGLE_HASH=True,
    SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS={
        "argon2__memory_cost": 65536, "argon2__rounds": 3, "argon2__parallelism": 4},
    SECURITY_POST_LOGIN_VIEW="/users",
)
db = SQLAlchemy(app)


class Role(db.Model, RoleMixin):
    __tablename__ = "roles"
    name = db.Column(String(20), primary_key=True)
    description = db.Column(String(200))


class User(db.Model, UserMixin):
    __tablename__ = "users"
    id = db.Column(Integer, primary_key=True)
    username = db.Column(String(32))
    email = db.Column(String(254))
    password = db.Column("password_hash", String(255))
    role = db.Column(String(20), ForeignKey("roles.name"))
    active = db.Column(Boolean)
    last_login_at = db.Column(DateTime)
    created_at = db.Column(DateTime)
    deleted_at = db.Column(DateTime)
    fs_uniquifier = column_property(func.lower(username))
    roles = relationship(Role, viewonly=True, uselist=True)


security = Security(app, SQLAlchemyUserDatastore(db, User, Role))


@app.get("/users")
@roles_accepted("Admin", "Manager")
def users():
    page = db.paginate(select(User).where(User.deleted_at.is_(None))
                       .order_by(func.lower(User.username), User.id), per_page=50, max_per_page=50)
    return render_template("users.html", page=page)
