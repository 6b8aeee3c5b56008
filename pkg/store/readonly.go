package store

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/zap"
)

// OpenReadOnly connects to ClickHouse at dsn to query it, as a user that
// may only read (the CLI's results, export and report): it creates no
// database and applies no migration — a writer's Open does that, and a
// read-only user may do neither.
func OpenReadOnly(ctx context.Context, dsn string, logger *zap.Logger) (*Store, error) {
	opts, db, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	opts.Auth.Database = db
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", redact(dsn), err)
	}
	if err := pingRetry(ctx, conn, 15*time.Second); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to clickhouse %s: %w", redact(dsn), err)
	}
	return &Store{conn: conn, database: db, logger: logger.With(zap.String("component", "store"))}, nil
}

// parseDSN parses dsn (clickhouse://user:password@host:port/database) into
// the pool's options, and names its database ("default" when it names none).
func parseDSN(dsn string) (*clickhouse.Options, string, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("parse clickhouse dsn %q: expected clickhouse://user:password@host:9000/database: %w", redact(dsn), err)
	}
	db := opts.Auth.Database
	if db == "" {
		db = "default"
	}
	if !dbNameRE.MatchString(db) {
		return nil, "", fmt.Errorf("clickhouse dsn: database name %q: expected letters, digits and _", db)
	}
	opts.DialTimeout = 5 * time.Second
	opts.ReadTimeout = 30 * time.Second
	opts.MaxOpenConns = 8
	return opts, db, nil
}

// RedactDSN is dsn without its password, for logs and banners.
func RedactDSN(dsn string) string { return redact(dsn) }
