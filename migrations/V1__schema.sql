-- The expense tracker. Money is integer cents; created_at is Unix time in milliseconds;
-- expense_date is the calendar day the expense belongs to, as 'YYYY-MM-DD'.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    email       TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE categories (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE expenses (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category_id   INTEGER REFERENCES categories (id) ON DELETE SET NULL,
    amount_cents  INTEGER NOT NULL,
    description   TEXT    NOT NULL,
    expense_date  TEXT    NOT NULL
        CHECK (expense_date GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
    created_at    INTEGER NOT NULL
);

-- Shared keyword -> category-name suggestions.
CREATE TABLE keywords (
    id             INTEGER PRIMARY KEY,
    keyword        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    category_name  TEXT    NOT NULL,
    weight         INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL
);

-- Daily metrics are derived from expenses, never stored twice.
CREATE VIEW daily_metrics AS
    SELECT user_id, expense_date, SUM(amount_cents) AS total_cents, COUNT(*) AS expense_count
    FROM expenses
    GROUP BY user_id, expense_date;
