//! Scarce labels: a class-balanced, seeded subset of a training split (`--train-limit`).

use crate::kernels::data::permutation;
use super::mnist::Split;
use crate::{Error, Result};

/// The indices (ascending) of `n` items of `labels`, as evenly spread over the classes
/// (the labels `0..=max`) as the data allows, drawn with `seed`.
///
/// Each class gets `n / classes` items, and the remainder `n % classes` goes one each to
/// the lowest classes (so 105 of MNIST's 10 classes are 11 of digits 0-4 and 10 of 5-9).
/// A class with fewer items than its share gives all it has and the shortfall passes, one
/// at a time, to the next classes that still have items. Within a class the items are a
/// seeded shuffle's first ones, so for one seed a smaller subset is contained in a larger
/// one (the 100-label run's images are among the 1,000-label run's).
///
/// Errors when `n` is 0 or more than `labels.len()`, naming `--train-limit`.
///
/// ```
/// let labels = [0u8, 1, 0, 1, 0, 1, 2, 2];
/// let pick = kiln::data::balanced_subset(&labels, 4, 1).unwrap();
/// let mut per_class = [0; 3];
/// for &i in &pick { per_class[labels[i as usize] as usize] += 1; }
/// assert_eq!(per_class, [2, 1, 1]); // 4 = 1 + 1 + 1, the remainder to class 0
/// ```
pub fn balanced_subset(labels: &[u8], n: usize, seed: u64) -> Result<Vec<u32>> {
    check_limit(n, labels.len())?;
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    // each class's items in a seeded order (one permutation of the split, filtered by class)
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); classes];
    for i in permutation(labels.len(), seed ^ 0x5ca2_ce1a_be15) {
        members[labels[i as usize] as usize].push(i);
    }
    let mut take = vec![0usize; classes];
    let mut left = n;
    // round-robin over the classes that still have items: the first n / classes rounds give
    // every class its share, the last partial round the lowest classes one more
    while left > 0 {
        for (c, m) in members.iter().enumerate() {
            if left > 0 && take[c] < m.len() {
                take[c] += 1;
                left -= 1;
            }
        }
    }
    let mut picked: Vec<u32> = members.iter().zip(&take).flat_map(|(m, &t)| m[..t].iter().copied()).collect();
    picked.sort_unstable();
    Ok(picked)
}

/// A subset of `n` labelled images (`TrainConfig::train_limit`) must lie in 1..=`available`
/// (the training split's size).
pub fn check_limit(n: usize, available: usize) -> Result<()> {
    if n == 0 || n > available {
        return Err(Error::unsupported(
            "TrainConfig::train_limit",
            format!("{n}: expected a number of labelled training images from 1 to {available} (the training split's size)"),
        ));
    }
    Ok(())
}

impl Split {
    /// The items at `indices`, in that order.
    pub fn select(&self, indices: &[u32]) -> Split {
        let mut images = super::idx::Images { count: indices.len(), rows: self.images.rows, cols: self.images.cols, pixels: Vec::new() };
        let len = self.images.image_len();
        images.pixels.reserve(indices.len() * len);
        for &i in indices {
            images.pixels.extend_from_slice(&self.images.pixels[i as usize * len..(i as usize + 1) * len]);
        }
        Split { images, labels: indices.iter().map(|&i| self.labels[i as usize]).collect() }
    }

    /// [`balanced_subset`] of this split: `n` images, class-balanced, drawn with `seed`.
    pub fn balanced(&self, n: usize, seed: u64) -> Result<Split> {
        Ok(self.select(&balanced_subset(&self.labels, n, seed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(labels: &[u8], pick: &[u32]) -> Vec<usize> {
        let mut c = vec![0; 10];
        for &i in pick {
            c[labels[i as usize] as usize] += 1;
        }
        c
    }

    #[test]
    fn balanced_seeded_nested_and_checked() {
        // 10 classes, unequal sizes: class c has 20 + 3c items, interleaved
        let grouped: Vec<u8> = (0..10u8).flat_map(|c| std::iter::repeat_n(c, 20 + 3 * c as usize)).collect();
        let labels: Vec<u8> = permutation(grouped.len(), 9).iter().map(|&i| grouped[i as usize]).collect();
        let a = balanced_subset(&labels, 105, 1).unwrap();
        assert_eq!(counts(&labels, &a), [11, 11, 11, 11, 11, 10, 10, 10, 10, 10]);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
        assert_eq!(a, balanced_subset(&labels, 105, 1).unwrap(), "deterministic");
        assert_ne!(a, balanced_subset(&labels, 105, 2).unwrap(), "seeded");
        let small = balanced_subset(&labels, 30, 1).unwrap();
        assert!(small.iter().all(|i| a.contains(i)), "a smaller subset is inside a larger one");
        // classes 0 and 1 have 20 and 23 items: asked for 25 each, they give all they have
        // and the next classes make up the 7, one each from the lowest
        let big = balanced_subset(&labels, 250, 3).unwrap();
        assert_eq!(counts(&labels, &big), [20, 23, 26, 26, 26, 26, 26, 26, 26, 25]);
        // the whole split, and the refusals
        assert_eq!(balanced_subset(&labels, labels.len(), 1).unwrap(), (0..labels.len() as u32).collect::<Vec<_>>());
        for n in [0, labels.len() + 1] {
            let e = balanced_subset(&labels, n, 1).unwrap_err().to_string();
            assert!(e.contains("TrainConfig::train_limit") && e.contains(&format!("1 to {}", labels.len())), "{e}");
        }
    }
}
