package console

import (
	"archive/zip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/report"
)

// reportMaxRuns is the power-over-time plots the downloaded report draws,
// `greenflow report`'s default (--max-runs), so the download is the page
// the CLI writes.
const reportMaxRuns = 8

// reportDownload sends the experiment's HTML report, the bytes `greenflow
// report` writes (pkg/report renders both), under the file name the CLI
// gives it. Any signed-in user who may read the experiment (viewers too):
// the user's token reads its status first.
func (c *Console) reportDownload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := c.api.Status(r.Context(), userOf(r).plain, id); err != nil {
		c.fail(w, r, "Report of "+id, err)
		return
	}
	page, err := report.Report(r.Context(), c.deps.Store, id, reportMaxRuns)
	if err != nil {
		c.fail(w, r, "Report of "+id, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="report-%s.html"`, id))
	_, _ = w.Write(page)
}

// exportDownload sends the files `greenflow export` writes for the
// experiment (runs, phases, targets, results, samples, summary, meters
// CSVs and provenance.json; ?samples=0 leaves samples.csv out, as
// --no-samples does) as one zip under export-ID/. pkg/report writes them
// into a temporary directory (the pod's /tmp), the same code and bytes as
// the CLI's, and the zip is streamed from there.
func (c *Console) exportDownload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := c.api.Status(r.Context(), userOf(r).plain, id); err != nil {
		c.fail(w, r, "Export of "+id, err)
		return
	}
	dir, err := os.MkdirTemp("", "greenflow-export-")
	if err != nil {
		c.fail(w, r, "Export of "+id, fmt.Errorf("make a temporary directory: %w", err))
		return
	}
	defer os.RemoveAll(dir)
	files, err := report.Export(r.Context(), c.deps.Store, id, dir, r.URL.Query().Get("samples") != "0")
	if err != nil {
		c.fail(w, r, "Export of "+id, err)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="export-%s.zip"`, id))
	zw := zip.NewWriter(w)
	for _, path := range files {
		if err := addToZip(zw, "export-"+id+"/"+filepath.Base(path), path); err != nil {
			// Headers are sent: the browser sees a truncated zip; say why here.
			c.logger.Warn("export download cut short", zap.String("experiment_id", id), zap.String("file", path), zap.Error(err))
			return
		}
	}
	if err := zw.Close(); err != nil {
		c.logger.Warn("export download cut short", zap.String("experiment_id", id), zap.Error(err))
	}
}

func addToZip(zw *zip.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	h, err := zip.FileInfoHeader(info)
	if err != nil {
		return err
	}
	h.Name, h.Method = name, zip.Deflate
	out, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, f)
	return err
}
