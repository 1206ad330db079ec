//! The cookie key life cycle: two slots, mint with the active one, validate with both.
//!
//! Rotation writes a fresh key into the inactive slot first and only then flips
//! `STATE.active_key`, so the XDP program never mints with a half-written key. A cookie
//! minted just before a rotation stays valid (in the now-inactive slot) for one more full
//! period, so every cookie lives at least one period.

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use synguard_common::maps::{KeySlot, State};

pub struct KeyRing {
    keys: Array<MapData, KeySlot>,
    state: Array<MapData, State>,
}

impl KeyRing {
    pub fn new(keys: Array<MapData, KeySlot>, state: Array<MapData, State>) -> Self {
        KeyRing { keys, state }
    }

    /// Keeps the keys of a previous run (pinned maps survive a restart), or installs the
    /// first key. Returns true when existing keys were reused.
    pub fn init_or_reuse(&mut self, wscale: u8) -> Result<bool> {
        let st = self.state.get(&0, 0)?;
        let active = self.keys.get(&(st.active_key & 1), 0)?;
        if active.valid == 1 {
            return Ok(true);
        }
        self.rotate(wscale)?;
        Ok(false)
    }

    /// Installs a new random key with the next epoch and makes it the minting key.
    pub fn rotate(&mut self, wscale: u8) -> Result<KeySlot> {
        let st = self.state.get(&0, 0)?;
        let cur = self.keys.get(&(st.active_key & 1), 0)?;
        let next_idx = if cur.valid == 1 {
            (st.active_key & 1) ^ 1
        } else {
            st.active_key & 1
        };
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw)
            .map_err(|e| anyhow::anyhow!("reading random key material: {e}"))?;
        let slot = KeySlot {
            k0: u64::from_le_bytes(raw[..8].try_into()?),
            k1: u64::from_le_bytes(raw[8..].try_into()?),
            epoch: cur.epoch.wrapping_add(1),
            wscale,
            valid: 1,
            _pad: [0; 2],
        };
        self.keys
            .set(next_idx, &slot, 0)
            .context("writing key slot")?;
        self.state
            .set(
                0,
                &State {
                    active_key: next_idx,
                    ..st
                },
                0,
            )
            .context("activating key slot")?;
        Ok(slot)
    }

    /// Sets `STATE.engaged`, keeping `active_key` as this ring last wrote it. The run loop
    /// owns the ring, so rotation and the auto-mode trigger are the only two writers of
    /// STATE and they never interleave.
    pub fn set_engaged(&mut self, engaged: bool) -> Result<()> {
        let st = self.state.get(&0, 0)?;
        self.state
            .set(
                0,
                &State {
                    engaged: u32::from(engaged),
                    ..st
                },
                0,
            )
            .context("writing STATE.engaged")
    }

    pub fn engaged(&self) -> Result<bool> {
        Ok(self.state.get(&0, 0)?.engaged != 0)
    }

    pub fn active(&self) -> Result<KeySlot> {
        let st = self.state.get(&0, 0)?;
        Ok(self.keys.get(&(st.active_key & 1), 0)?)
    }
}
