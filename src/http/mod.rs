//! Sans-IO HTTP/1.1: nothing in here touches a socket.
pub mod body;
pub mod head;
pub mod response;
