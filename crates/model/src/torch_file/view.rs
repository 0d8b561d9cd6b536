//! Tensors as `torch.save` stores them: a storage type's element kind, and a strided view
//! checked against its storage before any tch call sees it.

use tch::Kind;

/// Most dimensions of a tensor.
const MAX_DIMS: usize = 16;

/// A strided view of `available` elements: non-negative offset, sizes and strides of equal
/// count, every element inside the storage, and no more elements than the storage holds
/// (an expanded view would be materialised by `contiguous`). Checked arithmetic throughout.
pub fn check_view(offset: i64, size: &[i64], stride: &[i64], available: i64) -> std::result::Result<(), String> {
    if size.len() != stride.len() {
        return Err(format!("{} sizes but {} strides", size.len(), stride.len()));
    }
    if size.len() > MAX_DIMS {
        return Err(format!("{} dimensions (at most {MAX_DIMS})", size.len()));
    }
    if offset < 0 || size.iter().chain(stride).any(|&v| v < 0) {
        return Err(format!("negative offset, size or stride (offset {offset}, size {size:?}, stride {stride:?})"));
    }
    let overflow = || format!("size {size:?} with stride {stride:?} overflows");
    let numel = size.iter().try_fold(1i64, |n, &s| n.checked_mul(s)).ok_or_else(overflow)?;
    if numel == 0 {
        return if offset <= available { Ok(()) } else { Err(format!("offset {offset} is past the storage")) };
    }
    let last = size
        .iter()
        .zip(stride)
        .try_fold(offset, |end, (&s, &st)| end.checked_add((s - 1).checked_mul(st)?))
        .ok_or_else(overflow)?;
    if last >= available {
        return Err(format!("size {size:?}, stride {stride:?} at offset {offset} reach past its {available} elements"));
    }
    if numel > available {
        return Err(format!("{numel} elements from a storage of {available} (an expanded view)"));
    }
    Ok(())
}

pub fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_outside_their_storage_are_refused() {
        assert!(check_view(0, &[2, 3], &[3, 1], 6).is_ok());
        assert!(check_view(0, &[0], &[1], 0).is_ok());
        assert!(check_view(5, &[1], &[1], 6).is_ok());
        for (offset, size, stride) in [
            (-8i64, vec![2i64], vec![1i64]),
            (0, vec![2], vec![-1]),
            (0, vec![-5], vec![1]),
            (0, vec![1 << 62], vec![1]),
            (0, vec![1 << 40, 1 << 40], vec![1, 1]),
            (0, vec![1 << 40], vec![0]),
            (6, vec![1], vec![1]),
            (0, vec![2, 3], vec![3]),
            (0, vec![2], vec![i64::MAX]),
        ] {
            assert!(check_view(offset, &size, &stride, 6).is_err(), "{offset} {size:?} {stride:?}");
        }
    }
}
