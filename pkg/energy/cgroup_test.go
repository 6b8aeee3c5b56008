package energy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestParseCgroup(t *testing.T) {
	const (
		id  = "3f1c9a2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
		uid = "6f1e2d3c-4b5a-4978-8a1b-2c3d4e5f6a7b"
		us  = "6f1e2d3c_4b5a_4978_8a1b_2c3d4e5f6a7b"
	)
	tests := []struct {
		name string
		in   string
		want energy.CgroupInfo
	}{
		{"v2 containerd systemd burstable",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + us + ".slice/cri-containerd-" + id + ".scope\n",
			energy.CgroupInfo{ContainerID: id, PodUID: uid, Runtime: "containerd"}},
		{"v2 cri-o guaranteed",
			"0::/kubepods.slice/kubepods-pod" + us + ".slice/crio-" + id + ".scope\n",
			energy.CgroupInfo{ContainerID: id, PodUID: uid, Runtime: "cri-o"}},
		{"v2 cri-o conmon is not the container",
			"0::/kubepods.slice/kubepods-pod" + us + ".slice/crio-conmon-" + id + ".scope\n",
			energy.CgroupInfo{PodUID: uid}},
		{"v2 docker",
			"0::/system.slice/docker-" + id + ".scope\n",
			energy.CgroupInfo{ContainerID: id, Runtime: "docker"}},
		{"v2 containerd nested init scope",
			"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + us + ".slice/cri-containerd-" + id + ".scope/init.scope\n",
			energy.CgroupInfo{ContainerID: id, PodUID: uid, Runtime: "containerd"}},
		{"v1 cgroupfs kubepods",
			"12:cpu,cpuacct:/kubepods/besteffort/pod" + uid + "/" + id + "\n11:memory:/kubepods/besteffort/pod" + uid + "/" + id + "\n1:name=systemd:/kubepods/besteffort/pod" + uid + "/" + id + "\n",
			energy.CgroupInfo{ContainerID: id, PodUID: uid}},
		{"v1 docker",
			"4:memory:/docker/" + id + "\n0::/\n",
			energy.CgroupInfo{ContainerID: id}},
		{"v1 pod sandbox only",
			"3:cpu,cpuacct:/kubepods/burstable/pod" + uid + "\n",
			energy.CgroupInfo{PodUID: uid}},
		{"host process",
			"0::/user.slice/user-1000.slice/session-3.scope\n",
			energy.CgroupInfo{}},
		{"systemd service",
			"0::/system.slice/containerd.service\n",
			energy.CgroupInfo{}},
		{"paths with colons", "0::/a:b/docker-" + id + ".scope", energy.CgroupInfo{ContainerID: id, Runtime: "docker"}},
		{"garbage", "not a cgroup file", energy.CgroupInfo{}},
		{"empty", "", energy.CgroupInfo{}},
		{"short id is not a container", "0::/system.slice/docker-abc.scope\n", energy.CgroupInfo{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, energy.ParseCgroup([]byte(tt.in)))
		})
	}
}

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1e2d3c_4b5a_4978_8a1b_2c3d4e5f6a7b.slice/cri-containerd-3f1c9a2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8.scope\n"))
	f.Add([]byte("12:cpu,cpuacct:/kubepods/besteffort/pod6f1e2d3c-4b5a-4978-8a1b-2c3d4e5f6a7b/3f1c9a2b7d4e\n"))
	f.Add([]byte("::\n:\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := energy.ParseCgroup(data)
		if c.ContainerID != "" && (len(c.ContainerID) < 12 || len(c.ContainerID) > 128) {
			t.Fatalf("container id %q out of range", c.ContainerID)
		}
		if c.PodUID != "" && len(c.PodUID) != 36 {
			t.Fatalf("pod uid %q is not a UID", c.PodUID)
		}
		if c.Runtime != "" && c.ContainerID == "" {
			t.Fatalf("runtime %q without a container", c.Runtime)
		}
	})
}
