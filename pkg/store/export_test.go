package store

import (
	"context"

	"go.uber.org/zap"
)

// OpenAt opens the store with the migrations up to version applied, so a
// test can write data with an older schema and then migrate it.
func OpenAt(ctx context.Context, dsn string, logger *zap.Logger, version int) (*Store, error) {
	return open(ctx, dsn, logger, version)
}

// SplitStatements exposes the migration file parser.
var SplitStatements = splitStatements
