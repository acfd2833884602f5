//! Kubernetes' IP address and CIDR libraries (`ip()`, `cidr()` and their
//! methods), as `k8s.io/apiserver/pkg/cel/library/ip.go` and `cidr.go`
//! define them.
//!
//! Data flow: the overloads are declared on the environment by
//! [`super::register`]; `ip('…')` and `cidr('…')` of a literal are parsed at
//! load ([`super::Literals`]), so per request only addresses that come from
//! the request are parsed.
//!
//! Parsing is `std::net`'s, which, like Go's `netip` that Kubernetes uses,
//! refuses leading zeros in IPv4 octets and zones; IPv4-mapped IPv6
//! addresses are refused on top, as Kubernetes does, so that one address
//! has one spelling and a rule cannot be sidestepped by the other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cel::common::types::{CelBool, CelInt, CelString, STRING_TYPE, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use crate::policy::functions::bool_val;

use super::{arg, one, two};

/// The CEL type of an IP address: Kubernetes' name for it.
pub(crate) const IP: Type = Type::new_unspecified_type("net.IP");
/// The CEL type of a CIDR range: Kubernetes' name for it.
pub(crate) const CIDR: Type = Type::new_unspecified_type("net.CIDR");
static IP_TYPE: Type = IP;
static CIDR_TYPE: Type = CIDR;

/// An IP address, never an IPv4-mapped IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ip(pub IpAddr);

/// An IP prefix: the address as written (host bits may be set, as in
/// Kubernetes) and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Val for Ip {
    fn get_type(&self) -> &Type {
        &IP_TYPE
    }
    fn cel_type() -> &'static Type {
        &IP_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Ip>() == Some(self)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
impl StaticVal for Ip {}

impl Val for Cidr {
    fn get_type(&self) -> &Type {
        &CIDR_TYPE
    }
    fn cel_type() -> &'static Type {
        &CIDR_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Cidr>() == Some(self)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(*self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
impl StaticVal for Cidr {}

/// Parses an IP address as Kubernetes' `ip()` does; the error says why not.
pub(crate) fn parse_ip(text: &str) -> Result<Ip, String> {
    #[cfg(test)]
    super::count_parse(super::Parsed::Ip);
    // The whole text is quoted, never a part: a value the rule read from a
    // secret header is then found and redacted in errors and audit records.
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address"))?;
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Err(format!(
            "IPv4-mapped IPv6 address {text:?} is not allowed: write the IPv4 address"
        )),
        ip => Ok(Ip(ip)),
    }
}

/// Parses a CIDR range as Kubernetes' `cidr()` does (Go's
/// `netip.ParsePrefix`: a decimal prefix length without sign or leading
/// zero, host bits allowed).
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    #[cfg(test)]
    super::count_parse(super::Parsed::Cidr);
    let invalid = |why: &str| format!("{text:?} is not a CIDR range: {why}");
    let (addr, bits) = text.rsplit_once('/').ok_or_else(|| invalid("no '/'"))?;
    let addr = match parse_ip(addr) {
        Ok(Ip(addr)) => addr,
        Err(e) if e.contains("IPv4-mapped") => {
            return Err(format!(
                "IPv4-mapped IPv6 address {text:?} is not allowed: write the IPv4 range"
            ));
        }
        Err(_) => return Err(invalid("not an IP address before the '/'")),
    };
    let well_formed = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits: u8 = match bits.parse() {
        Ok(bits) if well_formed && bits <= max => bits,
        _ => return Err(invalid("bad prefix length")),
    };
    Ok(Cidr { addr, bits })
}

fn address_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    fn width(self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// The bits of the network part, the rest zero.
    fn network(self) -> u128 {
        let host = self.width() - u32::from(self.bits);
        let mask = u128::MAX.checked_shl(host).unwrap_or(0);
        let mask = if self.addr.is_ipv4() {
            mask & u128::from(u32::MAX)
        } else {
            mask
        };
        address_bits(self.addr) & mask
    }

    /// Whether `ip` is in the range; never across families (as Go's
    /// `Prefix.Contains`).
    pub(crate) fn contains(self, ip: IpAddr) -> bool {
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let inner = Cidr {
            addr: ip,
            bits: self.bits,
        };
        inner.network() == self.network()
    }

    /// Whether `other` lies wholly within this range.
    fn contains_cidr(self, other: Cidr) -> bool {
        self.bits <= other.bits && self.contains(other.addr)
    }

    fn masked(self) -> Cidr {
        let network = self.network();
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(network).unwrap_or_default())),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(network)),
        };
        Cidr {
            addr,
            bits: self.bits,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// Go's `IsGlobalUnicast`, which Kubernetes' `isGlobalUnicast` is: not
/// unspecified, broadcast, loopback, multicast or link-local; private
/// ranges are global unicast here. Hand-written because std's `is_global`
/// is unstable and means something else (it excludes private ranges).
fn is_global_unicast(ip: IpAddr) -> bool {
    !ip.is_unspecified()
        && ip != IpAddr::V4(Ipv4Addr::BROADCAST)
        && !ip.is_loopback()
        && !ip.is_multicast()
        && !is_link_local_unicast(ip)
}

/// 169.254.0.0/16 or fe80::/10 (std's IPv6 test is unstable on older
/// toolchains' MSRV, and it is one mask).
fn is_link_local_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80),
    }
}

/// 224.0.0.0/24, or an IPv6 multicast address of link-local scope
/// (`ffx2::/16`), as Go's `IsLinkLocalMulticast`.
fn is_link_local_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets(), [224, 0, 0, _]),
        IpAddr::V6(v6) => v6.segments().first().is_some_and(|s| s & 0xff0f == 0xff02),
    }
}

fn function_error(name: &str) -> impl Fn(String) -> ExecutionError + '_ {
    move |e| ExecutionError::function_error(name, e)
}

/// Declares `ip.<name>()`, computed by `$body` from the address.
macro_rules! ip_method {
    ($env:ident, $name:literal, |$ip:ident| $body:expr) => {{
        fn op<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
            let $ip = one::<Ip>(&args)?.0;
            Ok(CowVal::owned($body))
        }
        $env.add_member_overload($name, concat!("ip_", $name), IP, vec![], op)
    }};
}

/// Declares the IP and CIDR overloads on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], |args| {
        let text = one::<CelString>(&args)?;
        let ip = parse_ip(text.inner()).map_err(function_error("ip"))?;
        Ok(CowVal::owned(ip))
    })?;
    env.add_overload("isIP", "is_ip", vec![STRING_TYPE], |args| {
        Ok(bool_val(parse_ip(one::<CelString>(&args)?.inner()).is_ok()))
    })?;
    env.add_overload(
        "ip.isCanonical",
        "ip_is_canonical",
        vec![STRING_TYPE],
        |args| {
            let text = one::<CelString>(&args)?.inner();
            let Ip(ip) = parse_ip(text).map_err(function_error("ip.isCanonical"))?;
            // std prints RFC 5952 text for IPv6, as Go's `netip` does.
            Ok(bool_val(ip.to_string() == text))
        },
    )?;
    env.add_overload("string", "cidr_to_string", vec![CIDR], |args| {
        Ok(CowVal::owned(CelString::from(
            one::<Cidr>(&args)?.to_string(),
        )))
    })?;
    env.add_overload("string", "ip_to_string", vec![IP], |args| {
        Ok(CowVal::owned(CelString::from(
            one::<Ip>(&args)?.0.to_string(),
        )))
    })?;
    ip_method!(env, "family", |ip| CelInt::from(if ip.is_ipv4() {
        4
    } else {
        6
    }))?;
    ip_method!(env, "isUnspecified", |ip| CelBool::from(
        ip.is_unspecified()
    ))?;
    ip_method!(env, "isLoopback", |ip| CelBool::from(ip.is_loopback()))?;
    ip_method!(env, "isLinkLocalMulticast", |ip| CelBool::from(
        is_link_local_multicast(ip)
    ))?;
    ip_method!(env, "isLinkLocalUnicast", |ip| CelBool::from(
        is_link_local_unicast(ip)
    ))?;
    ip_method!(env, "isGlobalUnicast", |ip| CelBool::from(
        is_global_unicast(ip)
    ))?;
    register_cidr(env)
}

fn register_cidr(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], |args| {
        let text = one::<CelString>(&args)?;
        let cidr = parse_cidr(text.inner()).map_err(function_error("cidr"))?;
        Ok(CowVal::owned(cidr))
    })?;
    env.add_overload("isCIDR", "is_cidr", vec![STRING_TYPE], |args| {
        Ok(bool_val(
            parse_cidr(one::<CelString>(&args)?.inner()).is_ok(),
        ))
    })?;
    let cidr = || CIDR;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_ip",
        cidr(),
        vec![IP],
        |args| {
            let (range, ip) = two::<Cidr, Ip>(&args)?;
            Ok(bool_val(range.contains(ip.0)))
        },
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_string",
        cidr(),
        vec![STRING_TYPE],
        |args| {
            let (range, text) = two::<Cidr, CelString>(&args)?;
            let ip = parse_ip(text.inner()).map_err(function_error("containsIP"))?;
            Ok(bool_val(range.contains(ip.0)))
        },
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr",
        cidr(),
        vec![cidr()],
        |args| {
            let (range, other) = two::<Cidr, Cidr>(&args)?;
            Ok(bool_val(range.contains_cidr(*other)))
        },
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr_string",
        cidr(),
        vec![STRING_TYPE],
        |args| {
            let (range, text) = two::<Cidr, CelString>(&args)?;
            let other = parse_cidr(text.inner()).map_err(function_error("containsCIDR"))?;
            Ok(bool_val(range.contains_cidr(other)))
        },
    )?;
    register_cidr_methods(env)
}

/// Declares `ip()`, `masked()` and `prefixLength()` of a CIDR.
fn register_cidr_methods(env: &mut Env) -> Result<(), DeclarationError> {
    let cidr = || CIDR;
    env.add_member_overload("ip", "cidr_ip", cidr(), vec![], |args| {
        Ok(CowVal::owned(Ip(one::<Cidr>(&args)?.addr)))
    })?;
    env.add_member_overload("masked", "cidr_masked", cidr(), vec![], |args| {
        Ok(CowVal::owned(one::<Cidr>(&args)?.masked()))
    })?;
    env.add_member_overload(
        "prefixLength",
        "cidr_prefix_length",
        cidr(),
        vec![],
        |args| {
            Ok(CowVal::owned(CelInt::from(i64::from(
                one::<Cidr>(&args)?.bits,
            ))))
        },
    )?;
    Ok(())
}

/// `addr.inCidr(range)` and its forms: celador's shorthand for
/// `cidr(range).containsIP(addr)`, with the same parsing, so an
/// IPv4-mapped address or range is an error in both.
pub(crate) fn in_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let error = function_error("inCidr");
    let [address, ranges] = args.as_slice() else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    let address = arg::<CelString>(address.as_ref())?;
    let Ip(ip) = parse_ip(address.inner()).map_err(&error)?;
    if let Some(range) = ranges.downcast_ref::<CelString>() {
        return Ok(bool_val(
            parse_cidr(range.inner()).map_err(&error)?.contains(ip),
        ));
    }
    let list = ranges.as_iterable().ok_or_else(|| {
        ExecutionError::function_error("inCidr", "takes a CIDR string or a list of them")
    })?;
    let mut iter = list.iter();
    while let Some(item) = iter.next() {
        let range = item.downcast_ref::<CelString>().ok_or_else(|| {
            ExecutionError::function_error("inCidr", "the list must hold CIDR strings")
        })?;
        if parse_cidr(range.inner()).map_err(&error)?.contains(ip) {
            return Ok(bool_val(true));
        }
    }
    Ok(bool_val(false))
}

/// `inCidr` whose ranges the rules file spelt out, parsed at load into
/// `ranges`: only the address, read from the request, is parsed here.
pub(crate) fn address_in(address: &dyn Val, ranges: &[Cidr]) -> Result<bool, ExecutionError> {
    let address = arg::<CelString>(address)?;
    let Ip(ip) = parse_ip(address.inner()).map_err(function_error("inCidr"))?;
    Ok(ranges.iter().any(|range| range.contains(ip)))
}
