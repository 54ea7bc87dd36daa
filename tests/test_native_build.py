"""The native wing: one build of every kernel, cached per compiler, flags and CPU; failures reported, not hidden."""

from __future__ import annotations

import ctypes
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from suite.native import abi, build

CPU_A = "processor\t: 0\nmodel name\t: Some CPU v1\nflags\t\t: fpu sse2 avx avx2\n\nprocessor\t: 1\n"
CPU_B = CPU_A.replace("avx avx2", "avx avx2 avx512f")  # same model, one more feature: another library
needs_cc = pytest.mark.skipif(build.compiler() is None, reason="no C compiler")
needs_library = pytest.mark.skipif(abi.library() is None, reason="no C compiler (or HYBRIDBENCH_NO_NATIVE is set)")


def test_the_cpu_identity_reads_model_and_feature_flags() -> None:
    a, b = build.cpu_identity(CPU_A), build.cpu_identity(CPU_B)
    assert "Some CPU v1" in a and "avx2" in a
    assert a != b
    assert build.cpu_identity(CPU_A.replace("v1", "v2")) != a
    assert build.cpu_identity(CPU_A.replace("fpu sse2", "sse2 fpu")) == a  # the order of flags is no difference


def test_the_cache_key_changes_with_sources_compiler_flags_and_cpu() -> None:
    sources, cc, flags, cpu = {"a.c": "int f(void) { return 1; }", "h.h": "#define X 1"}, "gcc 12.2", [["-O3"]], "x"
    key = build.cache_key(sources, cc, flags, cpu)
    assert build.cache_key(dict(sources), cc, [list(f) for f in flags], cpu) == key
    changed = [build.cache_key({**sources, "a.c": "int f(void) { return 2; }"}, cc, flags, cpu),
               build.cache_key({**sources, "h.h": "#define X 2"}, cc, flags, cpu),
               build.cache_key(sources, "gcc 13.1", flags, cpu),
               build.cache_key(sources, cc, [["-O2"]], cpu),
               build.cache_key(sources, cc, [["-O3", "-DGATES_DOUBLE"]], cpu),
               build.cache_key(sources, cc, flags, build.cpu_identity(CPU_B))]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_library_path_depends_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    real = build.cpu_identity
    monkeypatch.setattr(build, "compiler_identity", lambda cc: "cc 1.0")
    paths = []
    for cpuinfo in (CPU_A, CPU_B, CPU_A):
        monkeypatch.setattr(build, "cpu_identity", lambda cc=None, text=cpuinfo: real(text))
        paths.append(build.library_path("cc"))
    assert paths[0] != paths[1] and paths[0] == paths[2]


@needs_cc
def test_a_broken_kernel_warns_naming_its_log_and_loads_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    shutil.copytree(build.SOURCE_DIR, src, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (src / "membrane.c").write_text((src / "membrane.c").read_text() + "\nint broken(void) { return undeclared; }\n")
    monkeypatch.setenv("HYBRIDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDBENCH_NO_NATIVE", raising=False)
    with pytest.warns(RuntimeWarning, match=r"did not build \(compiler output: .*\.log\)") as caught:
        assert build.load_from(src) is None
    log = Path(re.search(r"compiler output: (\S+\.log)", str(caught[0].message)).group(1))
    assert log.parent == tmp_path / "cache" and "undeclared" in log.read_text()
    assert not list((tmp_path / "cache").glob("*.so"))


def test_no_native_means_no_library_and_no_warning(monkeypatch: pytest.MonkeyPatch, recwarn) -> None:  # noqa: ANN001
    monkeypatch.setenv("HYBRIDBENCH_NO_NATIVE", "1")
    assert build.load_from() is None
    monkeypatch.delenv("HYBRIDBENCH_NO_NATIVE")
    monkeypatch.setattr(build, "compiler", lambda: None)
    assert build.load_from() is None
    assert not recwarn.list


@needs_library
def test_every_struct_has_the_size_the_compiler_gives_it() -> None:
    lib = abi.library()
    for _name, (struct, size_fn, _) in abi.ENTRY_POINTS.items():
        size = getattr(lib, size_fn)
        size.restype = ctypes.c_size_t
        assert size() == ctypes.sizeof(struct), struct.__name__


@needs_library
def test_the_compiler_output_is_kept_beside_the_library() -> None:
    path = build.library_path(build.compiler())
    assert path.exists()
    assert "exit status 0" in path.with_suffix(".log").read_text()


def test_kernel_arguments_are_checked_before_the_call() -> None:
    with pytest.raises(TypeError, match="CableArgs.parent: int64 is needed, got int32"):
        abi.args(abi.CableArgs, parent=np.zeros(3, dtype=np.int32))
    with pytest.raises(TypeError, match="CableArgs.gbar: .*not contiguous"):
        abi.args(abi.CableArgs, gbar=np.zeros((4, 4))[:, 0])
    with pytest.raises(TypeError, match="no field nodes"):
        abi.args(abi.CableArgs, nodes=3)
    s = abi.args(abi.CableArgs, N=3, v_lo=-100.0, out=np.zeros(3))
    assert (s.N, s.v_lo, s.stim) == (3, -100.0, None) and s.out is not None


def test_each_shared_helper_is_written_once_in_the_header() -> None:
    header = (build.SOURCE_DIR / build.HEADER).read_text()
    helpers = re.findall(r"static inline \w+ (hb_\w+)\(", header)
    assert {"hb_ipow", "hb_dipow", "hb_locate", "hb_lerp", "hb_gate_step", "hb_tanh4"} <= set(helpers)
    for path in sorted(build.SOURCE_DIR.glob("*.c")):
        text = path.read_text()
        assert '#include "hybridbench.h"' in text, path.name
        for helper in helpers:
            assert not re.search(rf"\b\w+\s+{helper}\s*\([^;]*\)\s*\{{", text), f"{path.name} redefines {helper}"
        assert not re.search(r"\bi?pow\w*\s*\(double x, int p\)\s*\{", text), f"{path.name} defines its own ipow"
        assert "2.76076847742355e-16" not in text, f"{path.name} spells out the tanh coefficients"
        assert "(v - v_lo) * inv_h" not in text and "* (1.0 / dv)" not in text, f"{path.name} locates on its own"


def _c_struct_fields(text: str, name: str) -> list[str]:
    """Field names, in order, of ``typedef struct { ... } name;`` in C source ``text``."""
    body = re.search(r"typedef struct \{([^}]*)\}\s*" + name + ";", text).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    names = []
    for decl in filter(str.strip, body.split(";")):
        first, *rest = decl.split(",")
        names.append(re.findall(r"\w+", first)[-1])
        names += [re.sub(r"\*|\bconst\b", "", part).strip() for part in rest]
    return names


@pytest.mark.parametrize(("struct", "c_name", "source"), [
    (abi.MembraneDims, "hb_membrane_dims", "hybridbench.h"), (abi.MembraneArgs, "hb_membrane_args", "hybridbench.h"),
    (abi.TreeArgs, "hb_tree_args", "hybridbench.h"), (abi.CableArgs, "hb_cable_args", "hybridbench.h"),
    (abi.HybridArgs, "hb_hybrid_args", "hybridbench.h"), (abi.GatesArgs, "Args", "gates.c")])
def test_each_struct_lists_the_c_fields_in_their_order(struct: type, c_name: str, source: str) -> None:
    text = (build.SOURCE_DIR / source).read_text()
    assert [f[0] for f in struct._fields_] == _c_struct_fields(text, c_name)
