-- Gatehouse schema. Generated from web/tables.py by `python run.py schema`; do not edit.
-- A test fails when this file, web/tables.py or a database the app created disagree.

-- ===== SQLite =====

CREATE TABLE audit_chain (
	id INTEGER NOT NULL,
	scheme VARCHAR(40) DEFAULT '' NOT NULL,
	position BIGINT DEFAULT 0 NOT NULL,
	chain_hash VARCHAR(64) DEFAULT '' NOT NULL,
	sealed_at DATETIME,
	checkpoint_position BIGINT DEFAULT 0 NOT NULL,
	checkpoint_hash VARCHAR(64) DEFAULT '' NOT NULL,
	verified_at DATETIME,
	verified_position BIGINT,
	verified_problem VARCHAR(300) DEFAULT '' NOT NULL,
	CONSTRAINT pk_audit_chain PRIMARY KEY (id),
	CONSTRAINT ck_audit_chain_one_row CHECK (id = 1)
);

CREATE TABLE audit_events (
	id INTEGER NOT NULL,
	occurred_at DATETIME NOT NULL,
	actor_id INTEGER,
	actor_name VARCHAR(32) DEFAULT '' NOT NULL,
	action VARCHAR(32) NOT NULL,
	target_type VARCHAR(32) NOT NULL,
	target_id INTEGER,
	target_name VARCHAR(32) DEFAULT '' NOT NULL,
	changes JSON,
	ip VARCHAR(45) DEFAULT '' NOT NULL,
	chain_position BIGINT,
	chain_hash VARCHAR(64),
	CONSTRAINT pk_audit_events PRIMARY KEY (id)
);

CREATE INDEX ix_audit_events_action ON audit_events (action, occurred_at);

CREATE INDEX ix_audit_events_actor ON audit_events (actor_id, occurred_at);

CREATE INDEX ix_audit_events_occurred_at ON audit_events (occurred_at, id);

CREATE INDEX ix_audit_events_target ON audit_events (target_type, target_id, occurred_at);

CREATE UNIQUE INDEX uq_audit_events_chain_position ON audit_events (chain_position);

CREATE TABLE login_throttle (
	"key" VARCHAR(300) NOT NULL,
	failures INTEGER NOT NULL,
	window_start DATETIME NOT NULL,
	locked_until DATETIME,
	CONSTRAINT pk_login_throttle PRIMARY KEY ("key")
);

CREATE TABLE outbox (
	id INTEGER NOT NULL,
	message_id VARCHAR(255) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	recipient VARCHAR(254) NOT NULL,
	subject VARCHAR(255) NOT NULL,
	text_body TEXT NOT NULL,
	html_body TEXT NOT NULL,
	secrets JSON,
	created_at DATETIME NOT NULL,
	due_at DATETIME NOT NULL,
	attempts INTEGER DEFAULT 0 NOT NULL,
	last_error VARCHAR(500) DEFAULT '' NOT NULL,
	claimed_until DATETIME,
	sent_at DATETIME,
	failed_at DATETIME,
	CONSTRAINT pk_outbox PRIMARY KEY (id)
);

CREATE INDEX ix_outbox_due_at ON outbox (due_at) WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE UNIQUE INDEX uq_outbox_message_id ON outbox (message_id);

CREATE TABLE roles (
	name VARCHAR(20) NOT NULL,
	description VARCHAR(200) NOT NULL,
	CONSTRAINT pk_roles PRIMARY KEY (name)
);

CREATE TABLE users (
	id INTEGER NOT NULL,
	username VARCHAR(32) NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_hash VARCHAR(255) NOT NULL,
	role VARCHAR(20) NOT NULL,
	active BOOLEAN DEFAULT true NOT NULL,
	version INTEGER DEFAULT 1 NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	last_login_at DATETIME,
	deleted_at DATETIME,
	email_confirmed_at DATETIME,
	invited_at DATETIME,
	theme VARCHAR(6) DEFAULT 'system' NOT NULL,
	single_key_shortcuts BOOLEAN DEFAULT true NOT NULL,
	CONSTRAINT pk_users PRIMARY KEY (id),
	CONSTRAINT ck_users_version_positive CHECK (version >= 1),
	CONSTRAINT fk_users_role_roles FOREIGN KEY(role) REFERENCES roles (name)
);

CREATE INDEX ix_users_active ON users (active, id);

CREATE INDEX ix_users_created_at ON users (created_at, id);

CREATE INDEX ix_users_deleted_at ON users (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE INDEX ix_users_invited_at ON users (invited_at) WHERE invited_at IS NOT NULL;

CREATE INDEX ix_users_last_login ON users (coalesce(last_login_at, '1970-01-01 00:00:00.000000'), id);

CREATE INDEX ix_users_role ON users (role, id);

CREATE UNIQUE INDEX uq_users_email_lower ON users (lower(email));

CREATE UNIQUE INDEX uq_users_username_lower ON users (lower(username));

CREATE TABLE account_tokens (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	purpose VARCHAR(16) NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_digest VARCHAR(64) DEFAULT '' NOT NULL,
	created_at DATETIME NOT NULL,
	expires_at DATETIME NOT NULL,
	CONSTRAINT pk_account_tokens PRIMARY KEY (id),
	CONSTRAINT fk_account_tokens_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_account_tokens_expires_at ON account_tokens (expires_at);

CREATE INDEX ix_account_tokens_user_id ON account_tokens (user_id, purpose);

CREATE TABLE imports (
	id INTEGER NOT NULL,
	created_by INTEGER,
	created_at DATETIME NOT NULL,
	filename VARCHAR(255) DEFAULT '' NOT NULL,
	state VARCHAR(16) NOT NULL,
	header JSON NOT NULL,
	mapping JSON,
	total INTEGER DEFAULT 0 NOT NULL,
	created INTEGER DEFAULT 0 NOT NULL,
	skipped INTEGER DEFAULT 0 NOT NULL,
	failed INTEGER DEFAULT 0 NOT NULL,
	claimed_until DATETIME,
	finished_at DATETIME,
	CONSTRAINT pk_imports PRIMARY KEY (id),
	CONSTRAINT fk_imports_created_by_users FOREIGN KEY(created_by) REFERENCES users (id) ON DELETE SET NULL
);

CREATE INDEX ix_imports_state ON imports (state);

CREATE TABLE live_presence (
	user_id INTEGER NOT NULL,
	editor_id INTEGER NOT NULL,
	expires_at DATETIME NOT NULL,
	CONSTRAINT pk_live_presence PRIMARY KEY (user_id, editor_id),
	CONSTRAINT fk_live_presence_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE,
	CONSTRAINT fk_live_presence_editor_id_users FOREIGN KEY(editor_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_live_presence_expires_at ON live_presence (expires_at);

CREATE TABLE login_challenges (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	remember BOOLEAN NOT NULL,
	next_path VARCHAR(2000) DEFAULT '' NOT NULL,
	stage VARCHAR(8) NOT NULL,
	created_at DATETIME NOT NULL,
	expires_at DATETIME NOT NULL,
	CONSTRAINT pk_login_challenges PRIMARY KEY (id),
	CONSTRAINT fk_login_challenges_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_login_challenges_expires_at ON login_challenges (expires_at);

CREATE INDEX ix_login_challenges_user_id ON login_challenges (user_id);

CREATE TABLE passkey_challenges (
	id VARCHAR(64) NOT NULL,
	purpose VARCHAR(16) NOT NULL,
	user_id INTEGER,
	user_handle VARCHAR(64),
	expires_at DATETIME NOT NULL,
	CONSTRAINT pk_passkey_challenges PRIMARY KEY (id),
	CONSTRAINT fk_passkey_challenges_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_passkey_challenges_expires_at ON passkey_challenges (expires_at);

CREATE TABLE passkeys (
	id INTEGER NOT NULL,
	user_id INTEGER NOT NULL,
	credential_id VARCHAR(1364) NOT NULL,
	user_handle VARCHAR(64) NOT NULL,
	public_key BLOB NOT NULL,
	sign_count BIGINT DEFAULT 0 NOT NULL,
	name VARCHAR(64) NOT NULL,
	transports JSON,
	created_at DATETIME NOT NULL,
	last_used_at DATETIME,
	CONSTRAINT pk_passkeys PRIMARY KEY (id),
	CONSTRAINT fk_passkeys_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_passkeys_user_id ON passkeys (user_id);

CREATE UNIQUE INDEX uq_passkeys_credential_id ON passkeys (credential_id);

CREATE TABLE recovery_codes (
	id INTEGER NOT NULL,
	user_id INTEGER NOT NULL,
	key_id VARCHAR(16) NOT NULL,
	code_hash VARCHAR(64) NOT NULL,
	created_at DATETIME NOT NULL,
	used_at DATETIME,
	CONSTRAINT pk_recovery_codes PRIMARY KEY (id),
	CONSTRAINT fk_recovery_codes_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_recovery_codes_user_id ON recovery_codes (user_id, code_hash);

CREATE TABLE sessions (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	remember BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	last_seen_at DATETIME NOT NULL,
	expires_at DATETIME NOT NULL,
	user_agent VARCHAR(255) DEFAULT '' NOT NULL,
	ip VARCHAR(45) DEFAULT '' NOT NULL,
	reauthenticated_at DATETIME,
	CONSTRAINT pk_sessions PRIMARY KEY (id),
	CONSTRAINT fk_sessions_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_sessions_expires_at ON sessions (expires_at);

CREATE INDEX ix_sessions_user_id ON sessions (user_id);

CREATE TABLE totp_factors (
	user_id INTEGER NOT NULL,
	key_id VARCHAR(16) NOT NULL,
	secret VARCHAR(500) NOT NULL,
	created_at DATETIME NOT NULL,
	confirmed_at DATETIME,
	last_used_step BIGINT,
	CONSTRAINT pk_totp_factors PRIMARY KEY (user_id),
	CONSTRAINT fk_totp_factors_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE import_rows (
	import_id INTEGER NOT NULL,
	line INTEGER NOT NULL,
	cells JSON NOT NULL,
	username VARCHAR(300) DEFAULT '' NOT NULL,
	email VARCHAR(300) DEFAULT '' NOT NULL,
	role VARCHAR(300) DEFAULT '' NOT NULL,
	active VARCHAR(300) DEFAULT '' NOT NULL,
	password_hash VARCHAR(300) DEFAULT '' NOT NULL,
	problems JSON,
	bad BOOLEAN DEFAULT false NOT NULL,
	outcome VARCHAR(16) DEFAULT '' NOT NULL,
	message VARCHAR(300) DEFAULT '' NOT NULL,
	user_id INTEGER,
	CONSTRAINT pk_import_rows PRIMARY KEY (import_id, line),
	CONSTRAINT fk_import_rows_import_id_imports FOREIGN KEY(import_id) REFERENCES imports (id) ON DELETE CASCADE
);

CREATE VIRTUAL TABLE users_search USING fts5(username, email, content='users', content_rowid='id', tokenize='trigram');

CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
  INSERT INTO users_search (rowid, username, email) VALUES (new.id, new.username, new.email);
END;

CREATE TRIGGER users_search_update AFTER UPDATE OF username, email ON users BEGIN
  INSERT INTO users_search (users_search, rowid, username, email) VALUES ('delete', old.id, old.username, old.email);
  INSERT INTO users_search (rowid, username, email) VALUES (new.id, new.username, new.email);
END;

CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
  INSERT INTO users_search (users_search, rowid, username, email) VALUES ('delete', old.id, old.username, old.email);
END;

-- ===== PostgreSQL =====

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE audit_chain (
	id INTEGER NOT NULL,
	scheme VARCHAR(40) DEFAULT '' NOT NULL,
	position BIGINT DEFAULT 0 NOT NULL,
	chain_hash VARCHAR(64) DEFAULT '' NOT NULL,
	sealed_at TIMESTAMP WITHOUT TIME ZONE,
	checkpoint_position BIGINT DEFAULT 0 NOT NULL,
	checkpoint_hash VARCHAR(64) DEFAULT '' NOT NULL,
	verified_at TIMESTAMP WITHOUT TIME ZONE,
	verified_position BIGINT,
	verified_problem VARCHAR(300) DEFAULT '' NOT NULL,
	CONSTRAINT pk_audit_chain PRIMARY KEY (id),
	CONSTRAINT ck_audit_chain_one_row CHECK (id = 1)
);

CREATE TABLE audit_events (
	id BIGSERIAL NOT NULL,
	occurred_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	actor_id INTEGER,
	actor_name VARCHAR(32) DEFAULT '' NOT NULL,
	action VARCHAR(32) NOT NULL,
	target_type VARCHAR(32) NOT NULL,
	target_id INTEGER,
	target_name VARCHAR(32) DEFAULT '' NOT NULL,
	changes JSON,
	ip VARCHAR(45) DEFAULT '' NOT NULL,
	chain_position BIGINT,
	chain_hash VARCHAR(64),
	CONSTRAINT pk_audit_events PRIMARY KEY (id)
);

CREATE INDEX ix_audit_events_action ON audit_events (action, occurred_at);

CREATE INDEX ix_audit_events_actor ON audit_events (actor_id, occurred_at);

CREATE INDEX ix_audit_events_occurred_at ON audit_events (occurred_at, id);

CREATE INDEX ix_audit_events_target ON audit_events (target_type, target_id, occurred_at);

CREATE UNIQUE INDEX uq_audit_events_chain_position ON audit_events (chain_position);

CREATE TABLE login_throttle (
	key VARCHAR(300) NOT NULL,
	failures INTEGER NOT NULL,
	window_start TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	locked_until TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_login_throttle PRIMARY KEY (key)
);

CREATE TABLE outbox (
	id BIGSERIAL NOT NULL,
	message_id VARCHAR(255) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	recipient VARCHAR(254) NOT NULL,
	subject VARCHAR(255) NOT NULL,
	text_body TEXT NOT NULL,
	html_body TEXT NOT NULL,
	secrets JSON,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	due_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	attempts INTEGER DEFAULT 0 NOT NULL,
	last_error VARCHAR(500) DEFAULT '' NOT NULL,
	claimed_until TIMESTAMP WITHOUT TIME ZONE,
	sent_at TIMESTAMP WITHOUT TIME ZONE,
	failed_at TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_outbox PRIMARY KEY (id)
);

CREATE INDEX ix_outbox_due_at ON outbox (due_at) WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE UNIQUE INDEX uq_outbox_message_id ON outbox (message_id);

CREATE TABLE roles (
	name VARCHAR(20) NOT NULL,
	description VARCHAR(200) NOT NULL,
	CONSTRAINT pk_roles PRIMARY KEY (name)
);

CREATE TABLE users (
	id SERIAL NOT NULL,
	username VARCHAR(32) NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_hash VARCHAR(255) NOT NULL,
	role VARCHAR(20) NOT NULL,
	active BOOLEAN DEFAULT true NOT NULL,
	version INTEGER DEFAULT 1 NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_login_at TIMESTAMP WITHOUT TIME ZONE,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	email_confirmed_at TIMESTAMP WITHOUT TIME ZONE,
	invited_at TIMESTAMP WITHOUT TIME ZONE,
	theme VARCHAR(6) DEFAULT 'system' NOT NULL,
	single_key_shortcuts BOOLEAN DEFAULT true NOT NULL,
	CONSTRAINT pk_users PRIMARY KEY (id),
	CONSTRAINT ck_users_version_positive CHECK (version >= 1),
	CONSTRAINT fk_users_role_roles FOREIGN KEY(role) REFERENCES roles (name)
);

CREATE INDEX ix_users_active ON users (active, id);

CREATE INDEX ix_users_created_at ON users (created_at, id);

CREATE INDEX ix_users_deleted_at ON users (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE INDEX ix_users_email_trgm ON users USING gin (lower(email) gin_trgm_ops) WITH (gin_pending_list_limit = 256);

CREATE INDEX ix_users_invited_at ON users (invited_at) WHERE invited_at IS NOT NULL;

CREATE INDEX ix_users_last_login ON users (coalesce(last_login_at, '1970-01-01 00:00:00.000000'), id);

CREATE INDEX ix_users_role ON users (role, id);

CREATE INDEX ix_users_username_trgm ON users USING gin (lower(username) gin_trgm_ops) WITH (gin_pending_list_limit = 256);

CREATE UNIQUE INDEX uq_users_email_lower ON users (lower(email));

CREATE UNIQUE INDEX uq_users_username_lower ON users (lower(username));

CREATE TABLE account_tokens (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	purpose VARCHAR(16) NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_digest VARCHAR(64) DEFAULT '' NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	CONSTRAINT pk_account_tokens PRIMARY KEY (id),
	CONSTRAINT fk_account_tokens_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_account_tokens_expires_at ON account_tokens (expires_at);

CREATE INDEX ix_account_tokens_user_id ON account_tokens (user_id, purpose);

CREATE TABLE imports (
	id BIGSERIAL NOT NULL,
	created_by INTEGER,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	filename VARCHAR(255) DEFAULT '' NOT NULL,
	state VARCHAR(16) NOT NULL,
	header JSON NOT NULL,
	mapping JSON,
	total INTEGER DEFAULT 0 NOT NULL,
	created INTEGER DEFAULT 0 NOT NULL,
	skipped INTEGER DEFAULT 0 NOT NULL,
	failed INTEGER DEFAULT 0 NOT NULL,
	claimed_until TIMESTAMP WITHOUT TIME ZONE,
	finished_at TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_imports PRIMARY KEY (id),
	CONSTRAINT fk_imports_created_by_users FOREIGN KEY(created_by) REFERENCES users (id) ON DELETE SET NULL
);

CREATE INDEX ix_imports_state ON imports (state);

CREATE TABLE live_presence (
	user_id INTEGER NOT NULL,
	editor_id INTEGER NOT NULL,
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	CONSTRAINT pk_live_presence PRIMARY KEY (user_id, editor_id),
	CONSTRAINT fk_live_presence_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE,
	CONSTRAINT fk_live_presence_editor_id_users FOREIGN KEY(editor_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_live_presence_expires_at ON live_presence (expires_at);

CREATE TABLE login_challenges (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	remember BOOLEAN NOT NULL,
	next_path VARCHAR(2000) DEFAULT '' NOT NULL,
	stage VARCHAR(8) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	CONSTRAINT pk_login_challenges PRIMARY KEY (id),
	CONSTRAINT fk_login_challenges_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_login_challenges_expires_at ON login_challenges (expires_at);

CREATE INDEX ix_login_challenges_user_id ON login_challenges (user_id);

CREATE TABLE passkey_challenges (
	id VARCHAR(64) NOT NULL,
	purpose VARCHAR(16) NOT NULL,
	user_id INTEGER,
	user_handle VARCHAR(64),
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	CONSTRAINT pk_passkey_challenges PRIMARY KEY (id),
	CONSTRAINT fk_passkey_challenges_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_passkey_challenges_expires_at ON passkey_challenges (expires_at);

CREATE TABLE passkeys (
	id SERIAL NOT NULL,
	user_id INTEGER NOT NULL,
	credential_id VARCHAR(1364) NOT NULL,
	user_handle VARCHAR(64) NOT NULL,
	public_key BYTEA NOT NULL,
	sign_count BIGINT DEFAULT 0 NOT NULL,
	name VARCHAR(64) NOT NULL,
	transports JSON,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_used_at TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_passkeys PRIMARY KEY (id),
	CONSTRAINT fk_passkeys_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_passkeys_user_id ON passkeys (user_id);

CREATE UNIQUE INDEX uq_passkeys_credential_id ON passkeys (credential_id);

CREATE TABLE recovery_codes (
	id BIGSERIAL NOT NULL,
	user_id INTEGER NOT NULL,
	key_id VARCHAR(16) NOT NULL,
	code_hash VARCHAR(64) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	used_at TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_recovery_codes PRIMARY KEY (id),
	CONSTRAINT fk_recovery_codes_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_recovery_codes_user_id ON recovery_codes (user_id, code_hash);

CREATE TABLE sessions (
	id VARCHAR(64) NOT NULL,
	user_id INTEGER NOT NULL,
	remember BOOLEAN NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	last_seen_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	user_agent VARCHAR(255) DEFAULT '' NOT NULL,
	ip VARCHAR(45) DEFAULT '' NOT NULL,
	reauthenticated_at TIMESTAMP WITHOUT TIME ZONE,
	CONSTRAINT pk_sessions PRIMARY KEY (id),
	CONSTRAINT fk_sessions_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_sessions_expires_at ON sessions (expires_at);

CREATE INDEX ix_sessions_user_id ON sessions (user_id);

CREATE TABLE totp_factors (
	user_id INTEGER NOT NULL,
	key_id VARCHAR(16) NOT NULL,
	secret VARCHAR(500) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	confirmed_at TIMESTAMP WITHOUT TIME ZONE,
	last_used_step BIGINT,
	CONSTRAINT pk_totp_factors PRIMARY KEY (user_id),
	CONSTRAINT fk_totp_factors_user_id_users FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE import_rows (
	import_id BIGINT NOT NULL,
	line INTEGER NOT NULL,
	cells JSON NOT NULL,
	username VARCHAR(300) DEFAULT '' NOT NULL,
	email VARCHAR(300) DEFAULT '' NOT NULL,
	role VARCHAR(300) DEFAULT '' NOT NULL,
	active VARCHAR(300) DEFAULT '' NOT NULL,
	password_hash VARCHAR(300) DEFAULT '' NOT NULL,
	problems JSON,
	bad BOOLEAN DEFAULT false NOT NULL,
	outcome VARCHAR(16) DEFAULT '' NOT NULL,
	message VARCHAR(300) DEFAULT '' NOT NULL,
	user_id INTEGER,
	CONSTRAINT pk_import_rows PRIMARY KEY (import_id, line),
	CONSTRAINT fk_import_rows_import_id_imports FOREIGN KEY(import_id) REFERENCES imports (id) ON DELETE CASCADE
);
