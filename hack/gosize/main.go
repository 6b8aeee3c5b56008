// Command gosize lists the ten largest non-test .go files (lines) and the
// ten longest functions (lines, declaration to closing brace) under a
// directory (default: the current one): the numbers issue 13's closing
// note compares before and after. Usage: go run ./hack/gosize [DIR]
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type item struct {
	name  string
	lines int
}

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	fset := token.NewFileSet()
	var files, funcs []item
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		files = append(files, item{rel, fset.File(f.Pos()).LineCount()})
		for _, decl := range f.Decls {
			if fd, ok := decl.(*ast.FuncDecl); ok && fd.Body != nil {
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				name := fd.Name.Name
				if fd.Recv != nil && len(fd.Recv.List) > 0 {
					t := fd.Recv.List[0].Type
					if s, ok := t.(*ast.StarExpr); ok {
						t = s.X
					}
					if id, ok := t.(*ast.Ident); ok {
						name = id.Name + "." + name
					}
				}
				funcs = append(funcs, item{rel + ":" + name, n})
			}
		}
		return nil
	})
	for _, l := range []struct {
		title string
		xs    []item
	}{{"largest files", files}, {"longest functions", funcs}} {
		sort.Slice(l.xs, func(i, j int) bool { return l.xs[i].lines > l.xs[j].lines })
		fmt.Println(l.title)
		for _, it := range l.xs[:min(10, len(l.xs))] {
			fmt.Printf("%5d %s\n", it.lines, it.name)
		}
	}
}
