"""The native wing: the C kernels as ``.c`` files with one shared header, one build and load, struct arguments.

``library()`` is the loaded library (None without a C compiler or with ``$HYBRIDBENCH_NO_NATIVE`` set: every
caller then runs its torch path); ``args`` fills a kernel's argument struct; ``cache_dir`` is where compiled
code lives.
"""

from suite.native.abi import CableArgs, GatesArgs, HybridArgs, MembraneArgs, MembraneDims, TreeArgs, args, library
from suite.native.build import cache_dir

__all__ = ["CableArgs", "GatesArgs", "HybridArgs", "MembraneArgs", "MembraneDims", "TreeArgs", "args", "cache_dir",
           "library"]
