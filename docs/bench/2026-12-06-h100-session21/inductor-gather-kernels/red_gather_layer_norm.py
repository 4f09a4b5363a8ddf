
import triton
import triton.language as tl

from torch._inductor.runtime import triton_helpers, triton_heuristics
from torch._inductor.runtime.triton_helpers import libdevice, math as tl_math
from torch._inductor.runtime.hints import AutotuneHint, ReductionHint, TileHint, DeviceProperties
triton_helpers.set_driver_to_gpu()

@triton_heuristics.reduction(
    size_hints={'x': 32768, 'r0_': 512},
    reduction_hint=ReductionHint.INNER,
    filename=__file__,
    triton_meta={'signature': {'in_ptr0': '*i64', 'in_ptr1': '*bf16', 'in_ptr2': '*bf16', 'in_ptr3': '*bf16', 'in_ptr4': '*bf16', 'in_ptr5': '*bf16', 'out_ptr2': '*bf16', 'xnumel': 'i32', 'r0_numel': 'i32', 'XBLOCK': 'constexpr', 'R0_BLOCK': 'constexpr'}, 'device': DeviceProperties(type='cuda', index=0, multi_processor_count=132, cc=90, major=9, regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048, max_threads_per_block=1024, warp_size=32), 'constants': {}, 'native_matmul': False, 'enable_fp_fusion': True, 'launch_pdl': False, 'disable_ftz': False, 'configs': [{(0,): [['tt.divisibility', 16]], (1,): [['tt.divisibility', 16]], (2,): [['tt.divisibility', 16]], (3,): [['tt.divisibility', 16]], (4,): [['tt.divisibility', 16]], (5,): [['tt.divisibility', 16]], (6,): [['tt.divisibility', 16]], (7,): [['tt.divisibility', 16]], (8,): [['tt.divisibility', 16]]}]},
    inductor_meta={'grid_type': 'Grid1D', 'autotune_hints': set(), 'kernel_name': 'triton_red_fused__unsafe_view_add_div_expand_gather_native_layer_norm_unsqueeze_view_16', 'mutated_arg_names': [], 'optimize_mem': True, 'no_x_dim': False, 'atomic_add_found': False, 'num_load': 7, 'num_store': 1, 'num_reduction': 2, 'backend_hash': '91D1D1166449D9E2EB66EB9770C9E2C3B0FEB787341F27FEB4D3F0338DA50336', 'assert_indirect_indexing': True, 'autotune_local_cache': True, 'autotune_pointwise': True, 'autotune_remote_cache': None, 'force_disable_caches': False, 'dynamic_scale_rblock': True, 'max_autotune': False, 'max_autotune_pointwise': False, 'min_split_scan_rblock': 256, 'spill_threshold': 16, 'store_cubin': False, 'deterministic': False, 'force_filter_reduction_configs': False, 'mix_order_reduction_allow_multi_stages': False, 'are_deterministic_algorithms_enabled': False, 'tiling_scores': {'x': 147456, 'r0_': 35391360}}
)
@triton.jit
def triton_red_fused__unsafe_view_add_div_expand_gather_native_layer_norm_unsqueeze_view_16(in_ptr0, in_ptr1, in_ptr2, in_ptr3, in_ptr4, in_ptr5, out_ptr2, xnumel, r0_numel, XBLOCK : tl.constexpr, R0_BLOCK : tl.constexpr):
    xnumel = 18432
    r0_numel = 320
    rnumel = r0_numel
    RBLOCK: tl.constexpr = R0_BLOCK
    xoffset = tl.program_id(0) * XBLOCK
    xindex = xoffset + tl.arange(0, XBLOCK)[:, None]
    xmask = xindex < xnumel
    r0_base = tl.arange(0, R0_BLOCK)[None, :]
    rbase = r0_base
    x3 = xindex
    tmp0 = tl.load(in_ptr0 + (x3), xmask, eviction_policy='evict_last')
    x1 = xindex // 9216
    tmp15_mean = tl.zeros([XBLOCK, R0_BLOCK], tl.float32)
    tmp15_m2 = tl.zeros([XBLOCK, R0_BLOCK], tl.float32)
    tmp15_weight = tl.zeros([XBLOCK, R0_BLOCK], tl.float32)
    for r0_offset in tl.range(0, r0_numel, R0_BLOCK):
        r0_index = r0_offset + r0_base
        r0_mask = r0_index < r0_numel
        roffset = r0_offset
        rindex = r0_index
        r0_2 = r0_index
        tmp9 = tl.load(in_ptr2 + (r0_2 + 320*x3), r0_mask & xmask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp10 = tl.load(in_ptr3 + (r0_2), r0_mask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp1 = tl.full([1, 1], 2765, tl.int32)
        tmp2 = tmp0 + tmp1
        tmp3 = tmp0 < 0
        tmp4 = tl.where(tmp3, tmp2, tmp0)
        tl.device_assert(((0 <= tmp4) & (tmp4 < 2765)) | ~(xmask), "index out of bounds: 0 <= tmp4 < 2765")
        tmp6 = tl.load(in_ptr1 + (r0_2 + 320*tmp4 + 884800*x1), r0_mask & xmask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp7 = tl.full([1, 1], 1.0, tl.float32)
        tmp8 = tmp6 * tmp7
        tmp11 = tmp9 + tmp10
        tmp12 = tmp8 + tmp11
        tmp13 = tmp12.to(tl.float32)
        tmp14 = tl.broadcast_to(tmp13, [XBLOCK, R0_BLOCK])
        tmp15_mean_next, tmp15_m2_next, tmp15_weight_next = triton_helpers.welford_reduce(
            tmp14, tmp15_mean, tmp15_m2, tmp15_weight, roffset == 0
        )
        tmp15_mean = tl.where(r0_mask & xmask, tmp15_mean_next, tmp15_mean)
        tmp15_m2 = tl.where(r0_mask & xmask, tmp15_m2_next, tmp15_m2)
        tmp15_weight = tl.where(r0_mask & xmask, tmp15_weight_next, tmp15_weight)
    tmp16, tmp17, tmp18 = triton_helpers.welford(tmp15_mean, tmp15_m2, tmp15_weight, 1)
    tmp15 = tmp16[:, None]
    tmp19 = tmp17[:, None]
    tmp20 = tmp18[:, None]
    for r0_offset in tl.range(0, r0_numel, R0_BLOCK):
        r0_index = r0_offset + r0_base
        r0_mask = r0_index < r0_numel
        roffset = r0_offset
        rindex = r0_index
        r0_2 = r0_index
        tmp29 = tl.load(in_ptr2 + (r0_2 + 320*x3), r0_mask & xmask, eviction_policy='evict_first', other=0.0).to(tl.float32)
        tmp30 = tl.load(in_ptr3 + (r0_2), r0_mask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp41 = tl.load(in_ptr4 + (r0_2), r0_mask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp44 = tl.load(in_ptr5 + (r0_2), r0_mask, eviction_policy='evict_last', other=0.0).to(tl.float32)
        tmp21 = tl.full([1, 1], 2765, tl.int32)
        tmp22 = tmp0 + tmp21
        tmp23 = tmp0 < 0
        tmp24 = tl.where(tmp23, tmp22, tmp0)
        tl.device_assert(((0 <= tmp24) & (tmp24 < 2765)) | ~(xmask), "index out of bounds: 0 <= tmp24 < 2765")
        tmp26 = tl.load(in_ptr1 + (r0_2 + 320*tmp24 + 884800*x1), r0_mask & xmask, eviction_policy='evict_first', other=0.0).to(tl.float32)
        tmp27 = tl.full([1, 1], 1.0, tl.float32)
        tmp28 = tmp26 * tmp27
        tmp31 = tmp29 + tmp30
        tmp32 = tmp28 + tmp31
        tmp33 = tmp32.to(tl.float32)
        tmp34 = tmp33 - tmp15
        tmp35 = tl.full([1, 1], 320.0, tl.float32)
        tmp36 = (tmp19 / tmp35)
        tmp37 = tl.full([1, 1], 1e-05, tl.float32)
        tmp38 = tmp36 + tmp37
        tmp39 = libdevice.rsqrt(tmp38)
        tmp40 = tmp34 * tmp39
        tmp42 = tmp41.to(tl.float32)
        tmp43 = tmp40 * tmp42
        tmp45 = tmp44.to(tl.float32)
        tmp46 = tmp43 + tmp45
        tmp47 = tmp46.to(tl.float32)
        tl.store(out_ptr2 + (r0_2 + 320*x3), tmp47, r0_mask & xmask)
