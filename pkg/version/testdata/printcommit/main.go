// Command printcommit prints what pkg/version says of the binary it is
// built into: the commit and where it came from (version_test builds it).
package main

import (
	"fmt"

	"github.com/greenflow/greenflow/pkg/version"
)

func main() { fmt.Printf("%s\n%s\n", version.Commit(), version.CommitSource()) }
