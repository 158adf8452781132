"""What the compiler emitted: PTX, TTGIR, ptxas -v and SASS read into counts (MMA kind, async
copies, load/store widths, 64-bit index math in loops, registers, spills) and the theoretical
occupancy on an H100."""
import math
import os
import re
import subprocess


H100 = dict(sms=132, regs_per_sm=65536, max_regs_per_cta=65536, smem_per_sm=233472, max_smem_per_cta=232448,
            smem_reserved_per_cta=1024, smem_unit=128, reg_unit=256, max_warps=64, max_ctas=32)
# Dense peak FLOP per clock per SM (H100 SXM: 989 TFLOPS bf16 = 132 SMs x 1.83 GHz x 4096).
PEAK_FLOP_PER_CLK = {"bf16": 4096, "fp16": 4096, "tf32": 2048, "fp32": 256}
# HBM3 bandwidth per SM per clock (3.35 TB/s / 132 SMs / 1.83 GHz).
HBM_BYTES_PER_CLK_PER_SM = 3.35e12 / 132 / 1.83e9


def _width(opcode):
    vec = re.search(r"\.v(\d)", opcode)
    bits = re.findall(r"\.[bsuf](\d+)\b", opcode)
    n = int(vec.group(1)) if vec else 1
    return n * (int(bits[-1]) if bits else 32)


def _loops(lines, label_re, branch_re):
    """(start, end) index pairs of backward branches: the loops of a linear instruction listing."""
    labels, loops = {}, []
    for i, line in enumerate(lines):
        m = label_re(line)
        if m is not None:
            labels[m] = i
    for i, line in enumerate(lines):
        target = branch_re(line)
        if target is not None and target in labels and labels[target] <= i:
            loops.append((labels[target], i))
    return loops


def analyse_ptx(ptx):
    body = [re.sub(r"//.*", "", line).strip() for line in ptx.splitlines()]
    body = [line for line in body if line]
    loops = _loops(body, lambda l: l[:-1] if re.fullmatch(r"\$L__\w+:", l) else None,
                   lambda l: (re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+)\s*;", l) or [None, None])[1])
    in_loop = [False] * len(body)
    for start, end in loops:
        for i in range(start, end + 1):
            in_loop[i] = True
    res = dict(wgmma=0, wgmma_shapes=set(), mma_sync=0, mma_shapes=set(), fma_f32=0, ldmatrix=0, tma=0,
               cp_async={}, ld_global={}, st_global={}, atomics=0, loops=len(loops),
               loop_i64_muldiv=0, loop_i64_divrem=0, i64_divrem=0, loop_ld_global={}, loop_cp_async=0,
               i64_div_fast_path=0)
    for i, line in enumerate(body):
        ins = re.sub(r"^@!?%\w+\s+", "", line)
        op = ins.split()[0] if ins.split() else ""
        if op.startswith("wgmma.mma_async"):
            res["wgmma"] += 1
            res["wgmma_shapes"].add(re.sub(r"^wgmma\.mma_async\.sync\.aligned\.", "", op))
        elif op.startswith("mma.sync"):
            res["mma_sync"] += 1
            res["mma_shapes"].add(re.sub(r"^mma\.sync\.aligned\.", "", op))
        elif op.startswith("fma.rn.f32") or op.startswith("fma.rn.ftz.f32"):
            res["fma_f32"] += 1
        elif op.startswith("ldmatrix"):
            res["ldmatrix"] += 1
        elif op.startswith("cp.async.bulk.tensor"):
            res["tma"] += 1
        elif op.startswith("cp.async.") and ".shared.global" in op:
            m = re.search(r"\]\s*,\s*(0x[0-9a-fA-F]+|\d+)\s*[,;]", ins)
            size = int(m.group(1), 0) if m else 0
            res["cp_async"][size * 8] = res["cp_async"].get(size * 8, 0) + 1
            if in_loop[i]:
                res["loop_cp_async"] += 1
        elif re.match(r"ld\.global", op):
            w = _width(op)
            res["ld_global"][w] = res["ld_global"].get(w, 0) + 1
            if in_loop[i]:
                res["loop_ld_global"][w] = res["loop_ld_global"].get(w, 0) + 1
        elif re.match(r"st\.global", op):
            w = _width(op)
            res["st_global"][w] = res["st_global"].get(w, 0) + 1
        elif re.match(r"(atom|red)\.global", op):
            res["atomics"] += 1
        if re.match(r"(div|rem)\.[su]64", op):
            res["i64_divrem"] += 1
            if in_loop[i]:
                res["loop_i64_divrem"] += 1
        if re.match(r"and\.b64", op) and re.search(r",\s*-4294967296\s*;", ins):
            res["i64_div_fast_path"] += 1  # LLVM's check that both operands fit in 32 bits
        if re.match(r"(mul|mad)\.lo\.[su]64", op) and in_loop[i]:
            res["loop_i64_muldiv"] += 1
    res["wgmma_shapes"] = sorted(res["wgmma_shapes"])
    res["mma_shapes"] = sorted(res["mma_shapes"])
    return res


def analyse_ttgir(ttgir):
    res = dict(warp_group_dot="ttng.warp_group_dot" in ttgir, mma_versions=sorted(set(
        int(v) for v in re.findall(r"nvidia_mma<\{versionMajor = (\d+)", ttgir))), async_copies=ttgir.count(
        "ttg.async_copy_global_to_local"), tma_loads=len(re.findall(r"async_tma_copy_global_to_local|tt\.descriptor_load",
                                                                   ttgir)),
        dot=bool(re.search(r"\btt\.dot\b|ttng\.warp_group_dot", ttgir)), buffers=[])
    for m in re.finditer(r"ttg\.local_alloc[^\n]*->\s*!ttg\.memdesc<([0-9x]+)x([a-z0-9]+),", ttgir):
        dims = [int(d) for d in m.group(1).split("x")]
        if len(dims) >= 3:
            res["buffers"].append(dims[0])
    return res


PTXAS_RE = dict(
    regs=re.compile(r"Used (\d+) registers"),
    stack=re.compile(r"(\d+) bytes stack frame"),
    spill_st=re.compile(r"(\d+) bytes spill stores"),
    spill_ld=re.compile(r"(\d+) bytes spill loads"),
    smem=re.compile(r"(\d+) bytes smem"),
)


def ptxas_tool(arch):
    from triton.backends.nvidia import compiler as nv
    if hasattr(nv, "get_ptxas"):
        return nv.get_ptxas(arch).path
    from triton import knobs
    return knobs.nvidia.ptxas.path


def run_ptxas(ptx, arch, workdir):
    from triton.backends.nvidia import compiler as nv
    import inspect
    ptxas = ptxas_tool(arch)
    src = os.path.join(workdir, "k.ptx")
    with open(src, "w") as f:
        f.write(ptx)
    flags = ["-lineinfo", "-v"]
    try:
        if "regAllocOptLevel" in inspect.getsource(nv.CUDABackend.make_cubin):
            flags.append("--regAllocOptLevel=2")
    except (OSError, TypeError):
        pass
    arch_name = nv.sm_arch_from_capability(arch)
    cmd = [ptxas, *flags, f"--gpu-name={arch_name}", src, "-o", os.path.join(workdir, "k.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stderr + proc.stdout
    res = {key: int(m.group(1)) if (m := rx.search(log)) else None for key, rx in PTXAS_RE.items()}
    res["ptxas"] = os.path.basename(ptxas) + " " + (re.search(r"release ([\d.]+)", subprocess.run(
        [ptxas, "--version"], capture_output=True, text=True).stdout) or [None, "?"])[1]
    res["ptxas_cmd_flags"] = " ".join(flags + [f"--gpu-name={arch_name}"])
    if proc.returncode != 0:
        res["ptxas_error"] = log[-2000:]
    return res


SASS_LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def analyse_sass(cubin, workdir):
    from triton import knobs
    try:
        tool = knobs.nvidia.cuobjdump.path
    except Exception:
        return {"sass_error": "no cuobjdump"}
    path = os.path.join(workdir, "k.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    proc = subprocess.run([tool, "-sass", path], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"sass_error": proc.stderr[-500:]}
    ins = []
    for line in proc.stdout.splitlines():
        m = SASS_LINE.match(line)
        if m:
            text = re.sub(r"^@!?U?P[T0-9]+\s+", "", m.group(2))
            ins.append((int(m.group(1), 16), text.split()[0] if text.split() else "", text))
    addr_index = {a: i for i, (a, _, _) in enumerate(ins)}
    loops = []
    for i, (addr, op, text) in enumerate(ins):
        if op.startswith("BRA"):
            t = re.search(r"BRA\s+(?:`\()?(0x[0-9a-f]+)", text)
            if t and int(t.group(1), 16) < addr and int(t.group(1), 16) in addr_index:
                loops.append((addr_index[int(t.group(1), 16)], i))

    def summarise(lo, hi):
        ops = [ins[k][1] for k in range(lo, hi + 1)]
        mma = [o for o in ops if o.startswith(("HGMMA", "HMMA"))]
        return dict(instructions=len(ops), hgmma=sum(o.startswith("HGMMA") for o in ops),
                    hmma=sum(o.startswith("HMMA") for o in ops), ffma=sum(o.startswith("FFMA") for o in ops),
                    mma_shapes=sorted(set(mma)),
                    ldg=sum(o.startswith("LDG.") or o == "LDG" for o in ops),
                    ldgsts=sum(o.startswith("LDGSTS") for o in ops),
                    stg=sum(o.startswith("STG") for o in ops),
                    calls=sum(o.startswith("CALL") for o in ops),
                    global_bytes=sum(_sass_bytes(o) for o in ops),
                    local=sum(o.startswith(("LDL", "STL")) for o in ops))

    whole = summarise(0, len(ins) - 1) if ins else {}
    main = None
    if loops:
        def weight(loop):
            s = summarise(*loop)
            return (s["hgmma"] + s["hmma"] + s["ffma"], s["ldg"] + s["ldgsts"] + s["stg"], s["instructions"])
        lo, hi = max(loops, key=weight)
        main = summarise(lo, hi)
        # Subroutines called from the loop (64-bit division, say): their length up to RET.
        called = []
        for k in range(lo, hi + 1):
            t = re.search(r"CALL\.\w+(?:\.\w+)*\s+(0x[0-9a-f]+)", ins[k][2])
            if t and int(t.group(1), 16) in addr_index:
                start = addr_index[int(t.group(1), 16)]
                end = next((m for m in range(start, len(ins)) if ins[m][1].startswith("RET")), start)
                called.append(end - start + 1)
        main["called_instructions"] = called
    return dict(sass_total=whole, sass_loop=main, sass_loops=len(loops))


def _sass_bytes(op):
    if not op.startswith(("LDG", "STG", "LDGSTS")):
        return 0
    m = re.search(r"\.(128|64|U16|S16|U8|S8)\b", op)
    if not m:
        return 4
    return {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}[m.group(1)]


def occupancy(regs, smem, warps, spec=H100):
    if regs is None or smem is None or not warps:
        return None
    regs_per_warp = math.ceil(max(regs, 1) * 32 / spec["reg_unit"]) * spec["reg_unit"]
    smem_per_cta = math.ceil((smem + spec["smem_reserved_per_cta"]) / spec["smem_unit"]) * spec["smem_unit"]
    limits = dict(warps=spec["max_warps"] // warps, regs=spec["regs_per_sm"] // (regs_per_warp * warps),
                  smem=spec["smem_per_sm"] // smem_per_cta, ctas=spec["max_ctas"])
    if smem > spec["max_smem_per_cta"] or regs_per_warp * warps > spec["max_regs_per_cta"]:
        return dict(ctas=0, warps=0, fraction=0.0, limiter="does not fit")
    ctas = min(limits.values())
    limiter = "/".join(k for k, v in limits.items() if v == ctas)
    return dict(ctas=ctas, warps=ctas * warps, fraction=ctas * warps / spec["max_warps"], limiter=limiter)
