-- Each index is named after the query it serves.

-- Expenses of a user, newest first, paged by (created_at, id) cursor.
CREATE INDEX idx_expenses_user_recent ON expenses (user_id, created_at);

-- Expenses of a user in a date range; daily metrics of a user and day.
CREATE INDEX idx_expenses_user_date_range ON expenses (user_id, expense_date);

-- Expenses of all users on a day or in a date range (reports across users).
CREATE INDEX idx_expenses_by_date ON expenses (expense_date);

-- Deleting a category sets its expenses' category_id to NULL: without this, a full scan.
CREATE INDEX idx_expenses_category_fk ON expenses (category_id);

-- Categories of a user, by name.
CREATE INDEX idx_categories_of_user ON categories (user_id, name);

-- Newest users and categories.
CREATE INDEX idx_users_recent ON users (created_at);
CREATE INDEX idx_categories_recent ON categories (created_at);
