//! Clusters from links: which images are the same photo, which products must share a split.

use std::collections::BTreeMap;

/// Union–find over `0..n` (path halving, the smaller index as the root).
pub struct UnionFind(Vec<usize>);

impl UnionFind {
    pub fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    /// The representative of `i`'s cluster.
    pub fn root(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    pub fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }

    /// Every element in one cluster, clusters by their smallest element, members in order.
    pub fn clusters(&mut self) -> Vec<Vec<usize>> {
        let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..self.0.len() {
            let root = self.root(i);
            clusters.entry(root).or_default().push(i);
        }
        clusters.into_values().collect()
    }
}
