//! Softmax and top-k over logits.

/// Turns `logits` into probabilities in place (numerically stable softmax).
pub fn softmax_in_place(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in logits.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in logits.iter_mut() {
        *v /= sum;
    }
}

/// The `k` largest entries as `(index, value)`, largest first; ties keep the lower index first.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in values.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(_, low)| v <= low) {
            continue;
        }
        let at = best.iter().position(|&(_, b)| v > b).unwrap_or(best.len());
        best.insert(at, (i, v));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = vec![1.0, 3.0, 2.0, 10.0];
        softmax_in_place(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[3] > v[1] && v[1] > v[2] && v[2] > v[0]);
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let mut v = vec![1000.0, 999.0];
        softmax_in_place(&mut v);
        assert!(v.iter().all(|p| p.is_finite()) && v[0] > v[1]);
    }

    #[test]
    fn top_k_picks_largest_in_order() {
        let v = [0.1, 0.5, 0.2, 0.9, 0.5];
        assert_eq!(top_k(&v, 3), vec![(3, 0.9), (1, 0.5), (4, 0.5)]);
        assert_eq!(top_k(&v, 10).len(), 5);
        assert!(top_k(&v, 0).is_empty());
    }
}
