//! The cookie key life cycle: two slots, mint with the active one, validate with both.
//!
//! Rotation writes a fresh key into the inactive slot first and only then flips
//! `STATE.active_key`, so the XDP program never mints with a half-written key. A cookie
//! minted just before a rotation stays valid (in the now-inactive slot) for one more full
//! period, so every cookie lives at least one period.
//!
//! ## Shared secret (`--key-file`)
//! With a key file, every host that shares it computes the same keys without talking to
//! another: the key of epoch `E` is HKDF-SHA256 of the 32-byte secret ([`derive()`]), and
//! `E` = unix time / rotation period, so an NTP clock is all the hosts share. What the two
//! slots hold at a time `t` is the pure function [`plan`]: the current epoch mints, the
//! other slot holds the previous epoch, until [`skew_margin`] seconds before the next
//! boundary, when it takes the next epoch. A host whose clock is up to the margin ahead or
//! behind therefore still holds the epoch a peer minted with (see [`plan`] for the bound).
//! The controller marks both slots as minted (`MINTED`): behind ECMP the fleet minted them,
//! not necessarily this host. A secret change (inotify, [`SecretSchedule::change`]) takes
//! effect at the first epoch not yet installed, so no installed key changes and the old
//! secret's last key stays valid for one more period.

use std::{
    fmt,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use synguard_common::maps::{KeySlot, State, minted_mark};

/// The HKDF salt and the prefix of its info: they name synguard and this derivation's
/// version, so no other use of the same secret yields these keys.
const HKDF_SALT: &[u8] = b"synguard cookie key v1";
const HKDF_INFO: &[u8] = b"synguard v1 siphash-2-4 key, epoch ";

/// A 32-byte cookie secret from a key file. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The key file format: 64 hex digits (either case), optionally one trailing newline.
    pub fn parse(text: &[u8]) -> std::result::Result<Secret, String> {
        let body = text
            .strip_suffix(b"\n")
            .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
            .unwrap_or(text);
        if body.len() != 64 {
            return Err(format!(
                "must hold exactly 64 hex digits (a 32-byte secret, e.g. from `openssl rand \
                 -hex 32`), optionally followed by a newline; it holds {} bytes",
                text.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in body.chunks(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => {
                    return Err(format!(
                        "must hold only hex digits (0-9, a-f); character {} is not one",
                        2 * i + usize::from(hex(pair[0]).is_some()) + 1
                    ));
                }
            }
        }
        Ok(Secret(out))
    }

    /// Reads and checks a key file: refused when its group or others have any permission
    /// on it (after following symlinks, as a Kubernetes Secret volume has them), or when
    /// it is not [`Secret::parse`]'s format. The error never quotes the contents.
    pub fn read(path: &Path) -> Result<Secret> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("key file {}: cannot stat", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!("key file {}: not a regular file", path.display());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "key file {}: mode {mode:03o} lets its group or others access it; the secret \
                 must be readable by its owner only (chmod 600, or defaultMode: 0400 in a \
                 Kubernetes Secret volume)",
                path.display()
            );
        }
        let text = std::fs::read(path)
            .with_context(|| format!("key file {}: cannot read", path.display()))?;
        Secret::parse(&text).map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))
    }
}

/// The SipHash key of `epoch` under `secret`: HKDF-SHA256 (RFC 5869) with a fixed salt,
/// info = [`HKDF_INFO`] || epoch (4 bytes big-endian), 16 bytes of output as k0, k1
/// (little-endian).
pub fn derive(secret: &Secret, epoch: u32) -> (u64, u64) {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), &secret.0);
    let mut info = [0u8; HKDF_INFO.len() + 4];
    info[..HKDF_INFO.len()].copy_from_slice(HKDF_INFO);
    info[HKDF_INFO.len()..].copy_from_slice(&epoch.to_be_bytes());
    let mut okm = [0u8; 16];
    // 16 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
    let _ = hk.expand(&info, &mut okm);
    let (a, b) = okm.split_at(8);
    (
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        u64::from_le_bytes(b.try_into().unwrap_or_default()),
    )
}

/// The clock skew between hosts a shared secret tolerates: a quarter of the rotation
/// period (0 below 4 s). See [`plan`].
pub fn skew_margin(period: u64) -> u64 {
    period / 4
}

/// What the two key slots hold at one moment: their epochs, and the slot that mints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub active: u32,
    pub epochs: [u32; 2],
}

/// The epoch of unix time `t` (seconds) for a rotation period.
pub fn epoch_at(t: u64, period: u64) -> u32 {
    (t / period.max(1)) as u32
}

/// The slots at unix time `t`: epoch `E = t / period` mints from slot `E & 1`; the other
/// slot holds `E - 1` until `margin` seconds before the next boundary and `E + 1` from
/// then on.
///
/// Bound: a cookie minted by host A validates on host B when their clocks differ by at
/// most `margin` and `skew + margin + RTT < period` (B then still holds A's epoch, or
/// already holds it: B takes `E + 1` `margin` seconds early and keeps `E` until `period -
/// margin` seconds after its end). Property-tested below.
pub fn plan(t: u64, period: u64, margin: u64) -> Plan {
    let period = period.max(1);
    let e = epoch_at(t, period);
    let other = if t % period >= period - margin.min(period) {
        e.wrapping_add(1)
    } else {
        e.wrapping_sub(1)
    };
    let active = e & 1;
    let mut epochs = [0; 2];
    epochs[active as usize] = e;
    epochs[(active ^ 1) as usize] = other;
    Plan { active, epochs }
}

/// The first unix second after `t` at which [`plan`] changes.
pub fn next_change(t: u64, period: u64, margin: u64) -> u64 {
    let period = period.max(1);
    let start = t - t % period;
    let pre = start + period - margin.min(period);
    if t < pre { pre } else { start + period }
}

/// The secret for each epoch: the current one, and the one it replaced for the epochs
/// before the switch.
#[derive(Clone, Debug)]
pub struct SecretSchedule {
    pub path: PathBuf,
    current: Secret,
    /// The replaced secret and the first epoch of `current`.
    previous: Option<(Secret, u32)>,
}

impl SecretSchedule {
    pub fn new(path: PathBuf, secret: Secret) -> SecretSchedule {
        SecretSchedule {
            path,
            current: secret,
            previous: None,
        }
    }

    pub fn secret_for(&self, epoch: u32) -> &Secret {
        match &self.previous {
            Some((old, from)) if epoch < *from => old,
            _ => &self.current,
        }
    }

    pub fn key(&self, epoch: u32) -> (u64, u64) {
        derive(self.secret_for(epoch), epoch)
    }

    /// Takes a new secret at unix time `t`: it applies from the first epoch [`plan`] has
    /// not installed yet, so no installed key changes. Returns that epoch, or `None` when
    /// the secret is the one in use.
    pub fn change(&mut self, new: Secret, t: u64, period: u64, margin: u64) -> Option<u32> {
        if new == self.current {
            return None;
        }
        let p = plan(t, period, margin);
        let from = p.epochs[0].max(p.epochs[1]).wrapping_add(1);
        match &self.previous {
            // The last change has not been installed yet: its secret never minted, so the
            // one before it stays the previous.
            Some((_, f)) if *f >= from => {
                let f = *f;
                self.current = new;
                Some(f)
            }
            _ => {
                let old = std::mem::replace(&mut self.current, new);
                self.previous = Some((old, from));
                Some(from)
            }
        }
    }
}

pub struct KeyRing {
    keys: Array<MapData, KeySlot>,
    state: Array<MapData, State>,
    minted: Array<MapData, u64>,
}

impl KeyRing {
    pub fn new(
        keys: Array<MapData, KeySlot>,
        state: Array<MapData, State>,
        minted: Array<MapData, u64>,
    ) -> Self {
        KeyRing {
            keys,
            state,
            minted,
        }
    }

    /// Shared-secret mode: makes the slots hold `plan` with the keys of `secrets`, marks
    /// both as minted (the fleet minted them), and mints with `plan.active`. XDP never
    /// mints with a slot while it is written: a slot that must change while it mints is
    /// rewritten after minting moved to the other (already correct) slot. `wscale` goes
    /// into slots that get a new key; a slot whose key stays keeps its own. Returns whether
    /// anything changed.
    pub fn apply_plan(&mut self, plan: Plan, secrets: &SecretSchedule, wscale: u8) -> Result<bool> {
        let want = |slot: u32, have: &KeySlot| {
            let epoch = plan.epochs[slot as usize];
            let (k0, k1) = secrets.key(epoch);
            let same = have.valid == 1 && have.k0 == k0 && have.k1 == k1 && have.epoch == epoch;
            KeySlot {
                k0,
                k1,
                epoch,
                wscale: if same { have.wscale } else { wscale },
                valid: 1,
                _pad: [0; 2],
            }
        };
        let mut changed = false;
        let write = |ring: &mut KeyRing, slot: u32| -> Result<bool> {
            let have = ring.keys.get(&slot, 0)?;
            let new = want(slot, &have);
            if new != have {
                ring.keys.set(slot, &new, 0).context("writing key slot")?;
            }
            let mark = minted_mark(new.epoch);
            if ring.minted.get(&slot, 0)? != mark {
                ring.minted
                    .set(slot, &mark, 0)
                    .context("marking key slot minted")?;
            }
            Ok(new != have)
        };
        let cur = self.state.get(&0, 0)?.active_key & 1;
        let other = cur ^ 1;
        changed |= write(self, other)?;
        if plan.active == other {
            self.set_active(other)?;
            changed = true;
            changed |= write(self, cur)?;
        } else {
            let have = self.keys.get(&cur, 0)?;
            if want(cur, &have) != have {
                self.set_active(other)?;
                write(self, cur)?;
                self.set_active(cur)?;
                changed = true;
            } else {
                write(self, cur)?;
            }
        }
        Ok(changed)
    }

    fn set_active(&mut self, slot: u32) -> Result<()> {
        let st = self.state.get(&0, 0)?;
        self.state
            .set(
                0,
                &State {
                    active_key: slot,
                    ..st
                },
                0,
            )
            .context("activating key slot")
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
        // The slot has not minted with its new key yet. Its new epoch usually differs from
        // the old one's, but not always after a key file's slots (whose marks the
        // controller set): clear the mark so this host accepts its cookies only once XDP
        // has minted with it, as before.
        self.minted
            .set(next_idx, &0, 0)
            .context("clearing the slot's minted mark")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holds(p: &Plan, epoch: u32) -> bool {
        p.epochs.contains(&epoch)
    }

    #[test]
    fn key_file_format() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let s = Secret::parse(hex.as_bytes()).unwrap();
        assert_eq!(Secret::parse(format!("{hex}\n").as_bytes()).unwrap(), s);
        assert_eq!(s.0[1], 0x11);
        assert_eq!(s.0[31], 0xff);
        assert!(
            Secret::parse(&hex.as_bytes()[..62])
                .unwrap_err()
                .contains("64 hex digits")
        );
        assert!(
            Secret::parse(format!("{hex}00").as_bytes())
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(Secret::parse(format!("{hex}\n\n").as_bytes()).is_err());
        let bad = hex.replace('a', "g");
        assert!(
            Secret::parse(bad.as_bytes())
                .unwrap_err()
                .contains("hex digits")
        );
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn key_file_permissions() {
        let dir = std::env::temp_dir().join(format!("synguard-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, [b'a'; 64]).unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o610, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = Secret::read(&p);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if !ok {
                assert!(format!("{:#}", r.unwrap_err()).contains("group or others"));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// RFC 5869-shaped derivation: pinned output, so a change of salt, info or byte order
    /// (which would split a fleet running two versions) fails here.
    #[test]
    fn derivation_is_pinned_and_epoch_bound() {
        let s = Secret([7; 32]);
        let a = derive(&s, 1);
        assert_ne!(a, derive(&s, 2));
        assert_ne!(a, derive(&Secret([8; 32]), 1));
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"synguard cookie key v1"), &[7; 32]);
        let mut okm = [0u8; 16];
        hk.expand(b"synguard v1 siphash-2-4 key, epoch \0\0\0\x01", &mut okm)
            .unwrap();
        assert_eq!(
            a,
            (
                u64::from_le_bytes(okm[..8].try_into().unwrap()),
                u64::from_le_bytes(okm[8..].try_into().unwrap())
            )
        );
    }

    #[test]
    fn plan_examples() {
        // period 60, margin 15: epoch 10 is [600, 660).
        assert_eq!(
            plan(600, 60, 15),
            Plan {
                active: 0,
                epochs: [10, 9]
            }
        );
        assert_eq!(
            plan(644, 60, 15),
            Plan {
                active: 0,
                epochs: [10, 9]
            }
        );
        assert_eq!(
            plan(645, 60, 15),
            Plan {
                active: 0,
                epochs: [10, 11]
            }
        );
        assert_eq!(
            plan(660, 60, 15),
            Plan {
                active: 1,
                epochs: [10, 11]
            }
        );
        assert_eq!(next_change(600, 60, 15), 645);
        assert_eq!(next_change(645, 60, 15), 660);
        assert_eq!(next_change(659, 60, 15), 660);
        // Margin 0: the previous epoch until the boundary.
        assert_eq!(
            plan(3, 1, 0),
            Plan {
                active: 1,
                epochs: [2, 3]
            }
        );
        assert_eq!(next_change(3, 1, 0), 4);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]

        /// Host A mints at its clock `t + skew_a`; host B validates `rtt` later at its clock
        /// `t + rtt + skew_b`. With |skew_a - skew_b| <= margin and relative skew + margin +
        /// RTT < period, B holds A's epoch. Also: A itself still holds it (the one-host
        /// case), and a plan only changes at `next_change`.
        #[test]
        fn cookie_minted_on_a_validates_on_b(
            period in 1u64..4000,
            t in 1_000_000_000u64..3_000_000_000,
            base in 0u64..2000,
            skew_frac in 0.0f64..=1.0,
            rtt_frac in 0.0f64..=1.0,
            a_ahead: bool,
        ) {
            let m = skew_margin(period);
            // Any skew up to the margin, and any RTT the bound allows.
            let skew = ((m as f64) * skew_frac) as u64;
            prop_assume!(skew + m < period);
            let rtt = (((period - skew - m - 1) as f64) * rtt_frac) as u64;
            let (skew_a, skew_b) = if a_ahead { (base + skew, base) } else { (base, base + skew) };
            let a = plan(t + skew_a, period, m);
            let minted = a.epochs[a.active as usize];
            let b = plan(t + rtt + skew_b, period, m);
            prop_assert!(holds(&b, minted), "A {a:?} B {b:?}");
            let a_later = plan(t + rtt + skew_a, period, m);
            prop_assert!(holds(&a_later, minted));
            let n = next_change(t, period, m);
            prop_assert!(n > t);
            prop_assert_eq!(plan(n - 1, period, m), plan(t, period, m));
            prop_assert_ne!(plan(n, period, m), plan(t, period, m));
        }

        /// A secret change never alters a key [`plan`] has installed, and the new secret
        /// mints no later than two boundaries on.
        #[test]
        fn secret_change_keeps_installed_keys(period in 4u64..4000, t in 1_000_000_000u64..3_000_000_000) {
            let m = skew_margin(period);
            let mut s = SecretSchedule::new("k".into(), Secret([1; 32]));
            let p = plan(t, period, m);
            let before = p.epochs.map(|e| s.key(e));
            let from = s.change(Secret([2; 32]), t, period, m).unwrap();
            prop_assert_eq!(p.epochs.map(|e| s.key(e)), before);
            prop_assert_eq!(s.secret_for(from), &Secret([2; 32]));
            prop_assert_eq!(s.secret_for(from - 1), &Secret([1; 32]));
            prop_assert!(from <= epoch_at(t, period) + 2);
            prop_assert!(s.change(Secret([2; 32]), t, period, m).is_none());
        }
    }
}
