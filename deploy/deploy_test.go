// Package deploy holds the Kubernetes manifests (kustomize) and Grafana
// provisioning (grafana/: data sources, dashboard provider and the
// generated dashboards); these tests keep them and skaffold.yaml parseable
// and consistent with the repository (grafana_test.go: the provisioning).
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestSkaffoldParsesAndNamesRealMains(t *testing.T) {
	raw, err := os.ReadFile("../skaffold.yaml")
	require.NoError(t, err)
	var cfg struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Build      struct {
			Artifacts []struct {
				Image string `yaml:"image"`
				Ko    struct {
					Main string `yaml:"main"`
				} `yaml:"ko"`
			} `yaml:"artifacts"`
		} `yaml:"build"`
		Manifests struct {
			Kustomize struct {
				Paths []string `yaml:"paths"`
			} `yaml:"kustomize"`
		} `yaml:"manifests"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	require.Equal(t, "Config", cfg.Kind)
	require.NotEmpty(t, cfg.Build.Artifacts)
	for _, a := range cfg.Build.Artifacts {
		_, err := os.Stat(filepath.Join("..", a.Ko.Main, "main.go"))
		require.NoError(t, err, "image %s: ko main %s has no main.go", a.Image, a.Ko.Main)
	}
	for _, p := range cfg.Manifests.Kustomize.Paths {
		checkKustomization(t, filepath.Join("..", p))
	}
}

func checkKustomization(t *testing.T, dir string) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	var k struct {
		Resources []string `yaml:"resources"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &k))
	require.NotEmpty(t, k.Resources)
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(dir, r))
		require.NoError(t, err, "resource %s", r)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		n := 0
		for {
			var doc struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
			}
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "resource %s document %d", r, n)
			require.NotEmpty(t, doc.APIVersion, "resource %s document %d", r, n)
			require.NotEmpty(t, doc.Kind, "resource %s document %d", r, n)
			require.NotEmpty(t, doc.Metadata.Name, "resource %s document %d", r, n)
			n++
		}
		require.Positive(t, n, "resource %s is empty", r)
	}
}
