package testbed_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/testbed"
)

// imageTar writes an OCI image-layout tarball as `make images` lays it
// out (oci-layout, index.json naming the image, a blob) for ref, with a
// blob of size bytes, and returns its content.
func imageTar(t *testing.T, dir, svc, ref string, size int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data))}))
		_, err := tw.Write(data)
		require.NoError(t, err)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("blobs/sha256/0000", bytes.Repeat([]byte{byte(len(svc))}, size))
	add("index.json", []byte(fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"digest":"sha256:0000","size":1,"annotations":{"io.containerd.image.name":%q,"org.opencontainers.image.ref.name":%q}}]}`, ref, ref)))
	require.NoError(t, tw.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, svc+".tar"), buf.Bytes(), 0o644))
	return buf.Bytes()
}

// After the bootstrap, Strimzi's operator goes onto the control node and
// every image onto every node, streamed over SSH through the gateway into
// k3s's containerd: the stand-in records the commands and the bytes each
// received.
func TestStrimziAndImagesOverSSH(t *testing.T) {
	dir := t.TempDir()
	sched := imageTar(t, dir, "scheduler", "greenflow/scheduler:v1.2.3", 300<<10)
	gf := imageTar(t, dir, "greenflow", "greenflow/greenflow:v1.2.3", 1000)
	images, err := testbed.ReadImages(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"greenflow/greenflow:v1.2.3", "greenflow/scheduler:v1.2.3"}, []string{images[0].Ref, images[1].Ref})

	sshw := newSSHWorld(t, k3sYAML, nil)
	r := reservation(t)
	run := sshw.runner(t, r.Spec)
	require.NoError(t, testbed.InstallStrimzi(context.Background(), run, r))
	var progress []string
	require.NoError(t, testbed.ImportImages(context.Background(), run, r, images, func(s string) { progress = append(progress, s) }))

	cmds := sshw.srv.Commands()
	require.Equal(t, "taurus-1.lyon.grid5000.fr", cmds[0].Host)
	require.Equal(t, "sudo-g5k k3s kubectl apply -f -", cmds[0].Cmd)
	require.Contains(t, cmds[0].Stdin, "kind: Namespace\nmetadata: {name: kafka}")
	require.Equal(t, "sudo-g5k k3s kubectl create -n kafka -f 'https://strimzi.io/install/latest?namespace=kafka'", cmds[1].Cmd)
	require.Contains(t, cmds[2].Cmd, "wait --for=condition=Established --timeout=5m crd/kafkas.kafka.strimzi.io crd/kafkanodepools.kafka.strimzi.io")
	require.Equal(t, "sudo-g5k k3s kubectl -n kafka rollout status deployment/strimzi-cluster-operator --timeout=10m", cmds[3].Cmd)

	got := map[string][]string{}
	for _, c := range cmds[4:] {
		require.Equal(t, "sudo-g5k k3s ctr -n k8s.io images import -", c.Cmd)
		switch c.Stdin {
		case string(sched):
			got[c.Host] = append(got[c.Host], "scheduler")
		case string(gf):
			got[c.Host] = append(got[c.Host], "greenflow")
		default:
			t.Fatalf("%s received %d bytes, not a whole tarball", c.Host, len(c.Stdin))
		}
	}
	require.Len(t, got, 5, "every node")
	for h, imgs := range got {
		require.Equal(t, []string{"greenflow", "scheduler"}, imgs, h)
	}
	require.Len(t, progress, 10)
	require.Contains(t, progress[1], "importing greenflow/scheduler:v1.2.3 (scheduler.tar, 0 MB) on taurus-1.lyon.grid5000.fr")

	// The manifests then name the imported images, not pulled.
	objs, err := cluster.Render("testbed", []string{"10.0.0.1/32"}, nil)
	require.NoError(t, err)
	require.NoError(t, testbed.UseImages(images, objs))
	seen := 0
	for _, u := range objs {
		if u.GetKind() != "Deployment" {
			continue
		}
		cs, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "template", "spec", "containers")
		for _, c := range cs.([]any) {
			c := c.(map[string]any)
			switch img := c["image"].(string); {
			case strings.HasPrefix(img, "greenflow/scheduler"), strings.HasPrefix(img, "greenflow/greenflow"):
				require.Contains(t, []string{"greenflow/scheduler:v1.2.3", "greenflow/greenflow:v1.2.3"}, img)
				require.Equal(t, "IfNotPresent", c["imagePullPolicy"], u.GetName())
				seen++
			case strings.HasPrefix(img, "greenflow/"):
				require.NotContains(t, img, ":v1.2.3", "not imported: left as it was")
			}
		}
	}
	require.GreaterOrEqual(t, seen, 2, "the scheduler and the NATS declarer")

	// A directory of something else is refused, naming the file.
	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, "x.tar"), []byte("not a tar"), 0o644))
	_, err = testbed.ReadImages(bad)
	require.ErrorContains(t, err, "x.tar")
	_, err = testbed.ReadImages(t.TempDir())
	require.ErrorContains(t, err, "no *.tar (make images writes .cache/images/<service>.tar)")
}
