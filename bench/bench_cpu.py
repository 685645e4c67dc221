# SPDX-License-Identifier: MIT
"""bench_cpu: the machine a Python-driven benchmark ran on (CPU name,
family/model/stepping, cores, the ISA flags our kernels choose from, load
average), the same fields as bench_cpu.c prints, so every bench JSON says
which CPU its figures come from (issue 11 item 5)."""
import os


def cpu_info():
    info = {"model_name": "unknown", "family": -1, "model": -1, "stepping": -1,
            "cores": os.cpu_count() or 1, "flags": {}}
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16")
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and info["model_name"] == "unknown":
                    info["model_name"] = value
                elif key == "cpu family" and info["family"] < 0:
                    info["family"] = int(value)
                elif key == "model" and info["model"] < 0:
                    info["model"] = int(value)
                elif key == "stepping" and info["stepping"] < 0:
                    info["stepping"] = int(value)
                elif key == "flags" and not info["flags"]:
                    have = set(value.split())
                    info["flags"] = {w: w in have for w in wanted}
    except (OSError, ValueError):
        pass
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load_avg"] = [-1, -1, -1]
    return info
