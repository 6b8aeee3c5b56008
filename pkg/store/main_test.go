package store_test

import (
	"testing"

	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
